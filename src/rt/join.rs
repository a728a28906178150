//! Combinators over local futures that every layer uses: run several concurrently and collect
//! their outputs in order ([`join_all`]), or wait for the first ([`first_of`]). They only poll
//! (no spawning, no timers), so they behave the same on glommio and under simulation.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// Runs local futures concurrently and returns their outputs in order.
pub async fn join_all<T: 'static>(futures: Vec<Pin<Box<dyn Future<Output = T>>>>) -> Vec<T> {
    JoinAll {
        futures: futures.into_iter().map(Some).collect(),
        outputs: Vec::new(),
    }
    .await
}

struct JoinAll<T> {
    futures: Vec<Option<Pin<Box<dyn Future<Output = T>>>>>,
    outputs: Vec<Option<T>>,
}

// Outputs are stored by value and never pinned, so moving JoinAll is fine.
impl<T> Unpin for JoinAll<T> {}

impl<T> Future for JoinAll<T> {
    type Output = Vec<T>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Vec<T>> {
        let this = &mut *self;
        if this.outputs.len() < this.futures.len() {
            this.outputs.resize_with(this.futures.len(), || None);
        }
        let mut pending = false;
        for (slot, output) in this.futures.iter_mut().zip(this.outputs.iter_mut()) {
            if let Some(future) = slot {
                match future.as_mut().poll(cx) {
                    Poll::Ready(value) => {
                        *output = Some(value);
                        *slot = None;
                    }
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            return Poll::Pending;
        }
        Poll::Ready(
            this.outputs
                .drain(..)
                .map(|o| o.expect("every future finished"))
                .collect(),
        )
    }
}

/// Resolves when the first of `futures` does (the others are dropped).
pub async fn first_of(futures: Vec<Pin<Box<dyn Future<Output = ()>>>>) {
    struct FirstOf(Vec<Pin<Box<dyn Future<Output = ()>>>>);
    impl Future for FirstOf {
        type Output = ();
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            for future in self.0.iter_mut() {
                if future.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(());
                }
            }
            Poll::Pending
        }
    }
    if !futures.is_empty() {
        FirstOf(futures).await;
    }
}
