"""Software stacks (the public name; defined in tapeout.perf.stack, see there and docs/stacks.md)."""
from .perf.stack import (KERNELS, Stack, load_stack, lower, stack_for, stack_names,  # noqa: F401
                         stacks_dir)
