//! Energy sensing: RAPL through powercap sysfs, or a labelled estimate.
