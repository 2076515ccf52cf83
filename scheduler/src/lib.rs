//! strata's scheduler: queues, tiers and launchers.
