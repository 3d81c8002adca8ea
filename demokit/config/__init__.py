"""What a target renders and switches: manifests, mirrord configs, DEMO_MODE."""
