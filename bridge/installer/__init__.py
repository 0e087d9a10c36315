# host-only. The installer behind ./flash.sh (docs/installing.md): checks, optional firmware
# image, compile, copy, provision, config.json, reset, on-board self-test. `python -m
# bridge.installer --help`.
