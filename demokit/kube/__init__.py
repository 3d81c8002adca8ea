"""The cluster targets: Ansible runs, the control plane, port-forwards, minikube, regions, the load Job."""
