//! `SharedClient::send_async` under tokio: four tasks on a current-thread runtime command one
//! simulated device concurrently, each awaiting its responses; a PUT whose outcome is awaited
//! with a tokio-free future, so the same code runs under any executor. finwatch itself depends
//! on no runtime: the future is woken by the client's loop thread.
//!
//! `cargo run --example async_tokio`

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::Duration;

use finwatch::{Request, SharedClient};
use support::DeviceServer;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dev = DeviceServer::keep_alive();
    let client = SharedClient::new()?;
    let runtime = tokio::runtime::Builder::new_current_thread().build()?;
    let statuses = runtime.block_on(async {
        let tasks: Vec<_> = (0..4)
            .map(|task| {
                let client = client.clone();
                let url = dev.url(&format!("/unico/v1/interface/io-state?ioId={}", 25600 + task));
                tokio::spawn(async move {
                    let mut statuses = Vec::new();
                    for _ in 0..10 {
                        let req = Request::get(&url).timeout(Duration::from_secs(2)).build()?;
                        statuses.push(client.send_async(req).await?.status());
                    }
                    Ok::<_, finwatch::Error>(statuses)
                })
            })
            .collect();
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.expect("task panicked")?);
        }
        Ok::<_, finwatch::Error>(all)
    })?;
    assert_eq!(statuses.len(), 40);
    assert!(statuses.iter().all(|&s| s == 200), "{statuses:?}");
    println!("40 GETs from 4 tokio tasks: all 200");
    // Errors arrive typed, as from `send`: a refused connection says nothing was sent.
    let refused = runtime.block_on(client.send_async(Request::put("http://127.0.0.1:9/io", "1").build()?));
    match refused {
        Err(e) => println!(
            "PUT to a closed port: {} (may have been processed: {})",
            e.kind(),
            e.may_have_been_processed()
        ),
        Ok(r) => println!("PUT to port 9 answered {} (something listens there)", r.status()),
    }
    client.shutdown(Duration::from_millis(200));
    Ok(())
}
