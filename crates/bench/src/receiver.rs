//! `receiver`: a marketplace's callback endpoint for the callbacks benchmark. It answers every
//! POST with 204 at once, or (`--hang`) accepts it and never answers, as a dead endpoint behind a
//! load balancer does; `GET /count` says how many requests it has had.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use actix_web::{App, HttpResponse, HttpServer, web};
use clap::Args;

#[derive(Debug, Args)]
pub struct ReceiverArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9900")]
    listen: String,
    /// Accept requests and never answer them.
    #[arg(long)]
    hang: bool,
}

pub async fn run(args: ReceiverArgs) -> anyhow::Result<()> {
    let received = Arc::new(AtomicU64::new(0));
    let hang = args.hang;
    let data = web::Data::from(received);
    HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .app_data(web::PayloadConfig::new(1 << 20))
            .route(
                "/count",
                web::get().to(|n: web::Data<AtomicU64>| async move {
                    HttpResponse::Ok().body(n.load(Ordering::Relaxed).to_string())
                }),
            )
            .default_service(web::to(
                move |n: web::Data<AtomicU64>, _body: web::Bytes| async move {
                    n.fetch_add(1, Ordering::Relaxed);
                    if hang {
                        tokio::time::sleep(Duration::from_secs(24 * 3600)).await;
                    }
                    HttpResponse::NoContent().finish()
                },
            ))
    })
    .workers(1)
    .bind(&args.listen)?
    .run()
    .await?;
    Ok(())
}
