"""An example flmi plug-in: the ``equal_weight`` strategy and its ``clip_grad`` client algorithm,
the ``tiny_cnn`` network and ``blobs`` data."""
