"""The control plane: the Tangled spindle that drives tack's providers."""
