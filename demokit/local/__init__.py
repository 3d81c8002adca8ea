"""The `local` target: the stack as local processes under supervisor."""
