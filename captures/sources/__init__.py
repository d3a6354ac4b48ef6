"""Where packets come from: one module per source (upload, local, lab, kubernetes)."""
