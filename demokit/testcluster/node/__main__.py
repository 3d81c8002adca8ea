import sys

from demokit.testcluster.node import main

sys.exit(main(sys.argv[1:]))
