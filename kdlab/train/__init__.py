"""The trainer and the recipes (pretrain, finetune, distil, prune, joint)."""
