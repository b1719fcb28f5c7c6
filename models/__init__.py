"""Model zoo: the networks of the papers, built from the layers in `implicit`."""
