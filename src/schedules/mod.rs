//! Work for later: jobs filed with `run_at`/`delay_ms` wait as `scheduled`, and schedules
//! (`[[schedules]]` in the configuration, the `/schedules` API) file a job per fire time of a
//! cron expression in a time zone. Every instance runs the same [`Scheduler`]; the database
//! decides who does what (SKIP LOCKED on due rows, one `schedule_fires` row per fire time),
//! so there is no leader to elect and a fire files exactly one job.

mod config;
mod runner;
mod template;
mod timetable;

pub use config::{CatchUp, Overlap, ScheduleConfig, schedule_problems};
pub use runner::{ScheduleError, Scheduler};
pub use template::{FireContext, render};
pub use timetable::{Timetable, TimetableError};
