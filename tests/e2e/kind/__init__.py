"""`make e2e-kind`: a kind cluster made and run on this machine without an image registry."""
