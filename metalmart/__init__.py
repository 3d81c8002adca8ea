"""MetalMart: the demo shop whose order events mirrord splits between the cluster and a developer's laptop."""
