"""Demo data and pretend readers, never part of the loop itself: the seed commands, the
browser tests, the end-to-end test and the load benchmark use them to fill a fresh install
with accounts, phantoms and a stage in review, and to let simulated MDs decide."""
