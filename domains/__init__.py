"""Domain adapters for embedseg: audio source separation and image segmentation."""
