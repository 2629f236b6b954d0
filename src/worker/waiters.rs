//! Requests waiting for jobs to finish. Completion wakes them directly (no polling): the
//! completer in this process, or the listener when another instance finished the job.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use tokio::sync::oneshot;

use crate::{ids::JobId, model::FinishedJob};

type Senders = Vec<oneshot::Sender<Arc<FinishedJob>>>;

#[derive(Default, Debug)]
pub struct Waiters {
    by_job: Mutex<HashMap<JobId, Senders>>,
}

impl Waiters {
    /// Register before the job can possibly finish, then await the returned waiter.
    pub fn register(self: &Arc<Self>, job: JobId) -> Waiter {
        let (tx, rx) = oneshot::channel();
        self.lock().entry(job).or_default().push(tx);
        Waiter {
            job,
            rx: Some(rx),
            waiters: self.clone(),
        }
    }

    /// Hands the finished job to everyone waiting for it.
    pub fn finish(&self, job: Arc<FinishedJob>) {
        let senders = self.lock().remove(&job.id);
        for tx in senders.into_iter().flatten() {
            let _ = tx.send(job.clone());
        }
    }

    pub fn is_waiting(&self, job: JobId) -> bool {
        self.lock().contains_key(&job)
    }

    pub fn waiting_jobs(&self) -> Vec<JobId> {
        self.lock().keys().copied().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<JobId, Senders>> {
        self.by_job.lock().expect("waiters lock poisoned")
    }
}

/// One request's wait. Dropping it (the request timed out or went away) removes it.
pub struct Waiter {
    job: JobId,
    rx: Option<oneshot::Receiver<Arc<FinishedJob>>>,
    waiters: Arc<Waiters>,
}

impl std::fmt::Debug for Waiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Waiter").field("job", &self.job).finish()
    }
}

impl Waiter {
    /// `None` when the wait was abandoned (the process is stopping).
    pub async fn finished(&mut self) -> Option<Arc<FinishedJob>> {
        self.rx.as_mut()?.await.ok()
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        drop(self.rx.take());
        let mut map = self.waiters.lock();
        if let Some(senders) = map.get_mut(&self.job) {
            senders.retain(|tx| !tx.is_closed());
            if senders.is_empty() {
                map.remove(&self.job);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{JobStatus, Mode};

    fn finished(id: JobId) -> Arc<FinishedJob> {
        Arc::new(FinishedJob {
            id,
            intent: "system.echo".into(),
            mode: Mode::Agent,
            status: JobStatus::Succeeded,
            result: None,
            error: None,
            callback_url: None,
            duration_ms: Some(1),
            finished_at: None,
        })
    }

    #[tokio::test]
    async fn every_waiter_is_woken_and_dropped_waiters_leave_nothing_behind() {
        let waiters = Arc::new(Waiters::default());
        let id = JobId::new();
        let mut a = waiters.register(id);
        let mut b = waiters.register(id);
        let gone = waiters.register(id);
        drop(gone);
        assert!(waiters.is_waiting(id));
        waiters.finish(finished(id));
        assert_eq!(a.finished().await.unwrap().id, id);
        assert_eq!(b.finished().await.unwrap().id, id);
        assert!(!waiters.is_waiting(id));

        let other = JobId::new();
        drop(waiters.register(other));
        assert!(waiters.waiting_jobs().is_empty());
    }
}
