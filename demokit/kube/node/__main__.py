import sys

from demokit.kube.node import main

sys.exit(main(sys.argv[1:]))
