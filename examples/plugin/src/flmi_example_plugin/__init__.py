"""An example flmi plug-in: the ``equal_weight`` strategy, ``tiny_cnn`` network, ``blobs`` data."""
