import sys

from demokit.node import main

sys.exit(main(sys.argv[1:]))
