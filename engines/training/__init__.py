"""torch modules of the motion model and the renderer, for training and export only (the
serving path never imports this package or torch).
"""
