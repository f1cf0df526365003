"""The filter path of ``core.edvr.Restore``, from the native plugin's call down to the network.

- ``plugin``: what the native plugin imports (``create``, ``Restorer.process``)
- ``options``: Restore's options, one table, and their checks
- ``windows``: which input frames make up each output frame's window
- ``engine``: frames to tensors and back, one network call per tile and window
- ``cache``, ``gate``, ``offsets``: the feature cache, the frame order, the lost-alignment warning
- ``tiles``: tile geometry, the GPU memory plan that chooses tiles, the out-of-memory retry's tiles
- ``gpu``: out-of-memory errors, pinned buffers, the current device
- ``shutdown``: stopping frames when the host exits
- ``log``: messages to the VapourSynth log, never to stdout

Nothing is imported here: ``vsedvr.restore`` reads ``options`` without loading PyTorch.
"""
