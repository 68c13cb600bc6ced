//! The CronJob controller, after upstream's `pkg/controller/cronjob`.

pub mod schedule;
