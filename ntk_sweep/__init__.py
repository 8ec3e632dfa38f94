"""ntk-sweep: measure whether wide networks train like kernel machines."""
