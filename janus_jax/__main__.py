"""`python -m janus_jax <command>` == `janus-jax <command>`."""
import sys

from janus_jax.cli import main

sys.exit(main())
