# host-only. The bridge (DESIGN.md 1, 5): MQTT in, settle each swipe exactly once into a
# double-entry ledger, MQTT out; plus the operator CLI. See docs/bridge.md.
#
# Ledger invariants, checked by `aixin ledger check` and after every test:
#   1. every transaction's entries sum to zero (money moves, it is never made or lost);
#   2. an account's balance equals the sum of its entries (no balance edited alone);
#   3. a (kiosk, seq) is decided once: its stored verdict is the only verdict it gets,
#      and it books at most one transaction;
#   4. a resident wallet never goes below zero.
VERSION = "1.0.0"
