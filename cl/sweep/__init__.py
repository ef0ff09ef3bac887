"""Sweeps: expand a grid or a W&B sweep file into trials, run them on warm local workers or a
Ray cluster, and keep a resumable sweep folder with per-trial and per-configuration tables."""
