//! Jobs worked through while a broker is killed: a consumer that
//! subscribes again after each loss, behind a `DeduplicateLayer`, and the
//! counts a test asserts (deliveries, work done, repeats skipped).

#![allow(dead_code)] // each user takes what it needs

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use seawall::messaging::{Consumer, DeduplicateLayer, Message, Publisher, Transport};
use seawall::BoxError;
use tokio::task::JoinHandle;
use tokio::time::{sleep, timeout};
use tower::{service_fn, Layer, Service, ServiceExt};

pub struct Jobs {
    delivered: Arc<Mutex<usize>>,
    done: Arc<Mutex<Vec<String>>>,
    dedup: DeduplicateLayer,
    total: usize,
}

impl Jobs {
    /// `total` jobs to do.
    pub fn new(total: usize) -> Jobs {
        Jobs {
            delivered: Arc::default(),
            done: Arc::default(),
            dedup: DeduplicateLayer::new(1_000).unwrap(),
            total,
        }
    }

    /// Publishes the jobs to `subject`, each confirmed, with the ids
    /// `job-0`, `job-1`, ….
    pub async fn publish<T: Transport>(&self, transport: T, subject: &'static str) {
        let mut publisher = Publisher::new(transport);
        for n in 0..self.total {
            let job = Message::new(subject, n.to_string()).with_id(format!("job-{n}"));
            publisher.ready().await.unwrap().call(job).await.unwrap();
        }
    }

    /// Works through `subject` on `transport`, 4 at a time and 20 ms each,
    /// subscribing again whenever the subscription ends, until every job
    /// is done; answers how many subscriptions it took.
    pub fn spawn_worker<T: Transport>(
        &self,
        transport: T,
        subject: &'static str,
    ) -> JoinHandle<usize> {
        let (delivered, done) = (Arc::clone(&self.delivered), Arc::clone(&self.done));
        let handler = self
            .dedup
            .layer(service_fn({
                let done = Arc::clone(&done);
                move |job: Message| {
                    let done = Arc::clone(&done);
                    async move {
                        sleep(Duration::from_millis(20)).await;
                        done.lock().unwrap().push(job.id.clone().unwrap());
                        Ok::<_, seawall::Error<BoxError>>(())
                    }
                }
            }))
            .map_request(move |job: Message| {
                *delivered.lock().unwrap() += 1;
                job
            });
        let total = self.total;
        tokio::spawn(async move {
            let mut runs = 0;
            while done.lock().unwrap().len() < total {
                let Ok(subscription) = transport.subscribe(subject).await else {
                    sleep(Duration::from_millis(100)).await;
                    continue;
                };
                runs += 1;
                let all_done = {
                    let done = Arc::clone(&done);
                    async move {
                        while done.lock().unwrap().len() < total {
                            sleep(Duration::from_millis(10)).await;
                        }
                    }
                };
                Consumer::new(handler.clone())
                    .concurrency(4)
                    .run_until(subscription, all_done)
                    .await;
            }
            runs
        })
    }

    /// Waits (at most 30 s) until `count` jobs are done.
    pub async fn wait_for(&self, count: usize) {
        timeout(Duration::from_secs(30), async {
            while self.done.lock().unwrap().len() < count {
                sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the jobs are being done");
    }

    /// None lost, each one's work done once, and every repeat delivery
    /// counted and skipped.
    pub fn assert_each_done_once(&self) {
        let done = self.done.lock().unwrap().clone();
        let distinct: BTreeSet<&String> = done.iter().collect();
        assert_eq!(distinct.len(), self.total, "none lost");
        assert_eq!(
            done.len(),
            self.total,
            "each job's work done once: {done:?}"
        );
        let delivered = *self.delivered.lock().unwrap();
        assert_eq!(
            self.dedup.figures().duplicates as usize,
            delivered - self.total,
            "every repeat delivery counted and skipped"
        );
    }
}
