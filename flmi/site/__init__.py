"""The one site code path. Every runtime calls :class:`flmi.site.site.Site`."""
