"""The picture of a rollout: one timeline per Machine with phase boundaries, stalls, remediations and reboots.

Contract: pure, small modules, data in and text out; no I/O, no clock.

* ``model``    — the data drawn (:class:`Picture`: tracks of lifecycle spans per Machine, marks, phase bands).
* ``build``    — a :class:`Picture` from lifecycle events (a simulator's timeline, or the cluster's Machines and
  Events) and a ledger (its phases and remediations).
* ``svg``      — the SVG text of a :class:`Picture` (self-contained: no scripts, no external fonts or links).
"""
