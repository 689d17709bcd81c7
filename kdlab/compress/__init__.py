"""Hard-concrete L0 gates, low-rank factorisation, distillation losses, materialisation."""
