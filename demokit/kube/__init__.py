"""Talking to a cluster target (minikube, a region, the test cluster): Ansible runs, port-forwards, what the operator
and the workloads say, regions and their registry, the in-cluster load Job."""
