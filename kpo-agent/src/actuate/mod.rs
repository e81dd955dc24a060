//! Actuators: the knobs KPO can move, behind one trait.
