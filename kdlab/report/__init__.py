"""The notebooks as HTML reports that open without a network, and the study's published pages."""
