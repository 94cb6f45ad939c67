"""What goes onto a device: the bundle, and the cross-built TVM runtime and Python packages inside it."""
