"""Runtime helpers every layer above ``scaler`` uses: the injected clock (``clock``, its fake
in ``testing``) and atomic file writes (``files``). They import only the standard library,
so ``providers`` and ``daemon`` both depend on them without depending on each other."""
