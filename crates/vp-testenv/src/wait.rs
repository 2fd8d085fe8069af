//! Polling until a condition holds, with a deadline and a message that says what was awaited and what was
//! last seen. Tests wait on the cluster with this instead of fixed sleeps.

use std::future::Future;
use std::time::{Duration, Instant};

use crate::Error;

/// Poll interval.
const INTERVAL: Duration = Duration::from_millis(250);

/// Calls `check` every 250 ms until it returns `Ok(Some(value))`, then returns the value. `Ok(None)` means
/// "not yet"; an `Err` ends the wait at once. After `timeout` the error names `what` and the last debug value
/// reason `check` gave.
pub async fn until<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Poll<T>, Error>>,
{
    let began = Instant::now();
    loop {
        let last = match check().await? {
            Poll::Ready(v) => return Ok(v),
            Poll::Pending(why) => why,
        };
        if began.elapsed() >= timeout {
            let last = if last.is_empty() {
                last
            } else {
                format!(" (last seen: {last})")
            };
            return Err(Error::Timeout {
                what: what.to_string(),
                seconds: began.elapsed().as_secs_f64(),
                last,
            });
        }
        tokio::time::sleep(INTERVAL).await;
    }
}

/// One observation of a polled condition.
#[derive(Debug)]
pub enum Poll<T> {
    /// The condition holds; the wait returns this value.
    Ready(T),
    /// Not yet, and why (shown if the wait times out).
    Pending(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn returns_the_value_once_ready() {
        let mut n = 0;
        let v = until("n to reach 3", Duration::from_secs(5), || {
            n += 1;
            let n = n;
            async move {
                Ok(if n >= 3 {
                    Poll::Ready(n)
                } else {
                    Poll::Pending(format!("n={n}"))
                })
            }
        })
        .await
        .expect("ready");
        assert_eq!(v, 3);
    }

    #[tokio::test]
    async fn times_out_with_the_last_reason() {
        let err = until::<(), _, _>("never", Duration::from_millis(300), || async {
            Ok(Poll::Pending("still no".into()))
        })
        .await
        .expect_err("timeout");
        let msg = err.to_string();
        assert!(
            msg.contains("waiting for never") && msg.contains("still no"),
            "{msg}"
        );
    }

    #[tokio::test]
    async fn errors_end_the_wait() {
        let err = until::<(), _, _>("x", Duration::from_secs(5), || async {
            Err(Error::Invalid("boom".into()))
        })
        .await
        .expect_err("error");
        assert!(err.to_string().contains("boom"));
    }
}
