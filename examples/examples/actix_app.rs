//! An actix-web app instrumented with Scout: `cargo run -p scout-examples --example actix_app`.
//!
//! Settings come from `SCOUT_*` variables: `SCOUT_MONITOR=true`, `SCOUT_KEY=...`,
//! `SCOUT_NAME="My App"`. Try `curl localhost:8080/users/7?password=x`.

use actix_web::{App, HttpServer, web};
use scout_std::FutureExt;
use scout_std::integrations::actix_web::{ScoutController, ScoutMiddleware};
use std::time::Duration;

async fn show_user(id: web::Path<u64>) -> String {
    let id = id.into_inner();
    async { actix_web::rt::time::sleep(Duration::from_millis(3)).await }
        .instrument_kind("SQL", "Query")
        .await;
    format!("user {id}\n")
}

fn main() -> std::io::Result<()> {
    let _agent = scout_std::install(scout_std::Config::new().name("Actix example"));
    actix_web::rt::System::new().block_on(async {
        println!("listening on http://127.0.0.1:8080");
        HttpServer::new(|| {
            App::new()
                .wrap(ScoutController::new())
                .wrap(ScoutMiddleware::new())
                .route("/users/{id}", web::get().to(show_user))
        })
        .bind(("127.0.0.1", 8080))?
        .run()
        .await
    })
}
