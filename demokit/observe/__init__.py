"""What observes a running demo: metrics, the dashboard and doctor."""
