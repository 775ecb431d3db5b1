# Runs first on every reset. Kept minimal: a crash here would stop the board
# from reaching main.py (and from being reachable with mpremote).
import gc

gc.collect()
