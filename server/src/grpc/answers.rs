//! A server stream fed by a task: the answer's messages as the task sends them, its error as
//! the stream's last item. Dropping the stream (the client went away) aborts the task, so a
//! query nobody waits for stops using the machine.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures::Stream;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tokio::task::AbortHandle;
use tonic::Status;

/// Where the task sends messages.
pub type Sender<T> = UnboundedSender<Result<T, Status>>;

/// The stream of one answer.
pub struct Answers<T> {
    rx: UnboundedReceiver<Result<T, Status>>,
    task: AbortHandle,
}

impl<T: Send + 'static> Answers<T> {
    /// Runs `work` on its own task; what it sends, then its error if it fails, is the stream.
    pub fn spawn<F, Fut>(work: F) -> Self
    where
        F: FnOnce(Sender<T>) -> Fut,
        Fut: Future<Output = Result<(), Status>> + Send + 'static,
    {
        let (tx, rx) = unbounded_channel();
        let errors = tx.clone();
        let fut = work(tx);
        let task = tokio::spawn(async move {
            if let Err(e) = fut.await {
                let _ = errors.send(Err(e));
            }
        })
        .abort_handle();
        Self { rx, task }
    }
}

impl<T> Stream for Answers<T> {
    type Item = Result<T, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

impl<T> Drop for Answers<T> {
    fn drop(&mut self) {
        self.task.abort();
    }
}
