"""The VMA: the agent inside each VM (``twistd qvd-vma``)."""
