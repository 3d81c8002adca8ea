"""The Kubernetes cluster this project builds for its tests and for `./run cluster start` (the `testcluster` target):
its binaries built from pinned Go modules (kubebuild), its certificate authority (pki), the control plane, the real
node and the images it runs, made here because nothing can be pulled (node, standin). Code that talks to any
cluster, this one included, is in demokit.kube."""
