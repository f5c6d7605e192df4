//! One function per subcommand.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use forage::app::{ExportRequest, FeedRequest, Forage, LabelEdit, NewLabel, demo};
use forage::embed::{default_model_dir, install_model};
use forage::server::Server;
use tidal_export::ExportFormat;

use crate::setup::{embed_with_progress, embedder, open_app};
use crate::{Common, LabelsAction, ServeOpts, SourcesAction};

/// `forage demo`: embedded Tidal, bundled samples, labels, embeddings, then the UI.
pub fn demo(common: &Common, serve_opts: &ServeOpts, no_serve: bool) -> Result<()> {
    let embedder = embedder(common, true)?;
    // Background work starts after set-up, so the worker does not embed what the foreground
    // pass below is embedding.
    let app = open_app(common, embedder, false)?;
    let sources = demo::install_samples(&app)?;
    embed_with_progress(&app)?;
    demo::install_sample_labels(&app)?;
    let stats = app.stats(None)?;
    println!(
        "Forage demo: {} items from {sources} sample sources in {}",
        stats.items,
        common.data_dir.display()
    );
    // A preview: ranked like a feed page but not logged, so these lines on the terminal do
    // not count as impressions (the items stay unseen for the UI's feed).
    let page = app.feed(&FeedRequest { limit: Some(5), preview: true, ..FeedRequest::default() })?;
    println!("What the feed would open with (a preview; not counted as shown):");
    for item in &page.items {
        println!(
            "  {:>2}. [{}] {}",
            item.position + 1,
            item.item.source_title.as_deref().unwrap_or("?"),
            item.item.title
        );
    }
    if no_serve {
        app.shutdown();
        return Ok(());
    }
    app.start_background();
    serve_app(app, serve_opts)
}

/// `forage serve`.
pub fn serve(common: &Common, serve_opts: &ServeOpts) -> Result<()> {
    let embedder = embedder(common, false)?;
    let app = open_app(common, embedder, true)?;
    serve_app(app, serve_opts)
}

fn serve_app(app: Arc<Forage>, opts: &ServeOpts) -> Result<()> {
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("tokio runtime")?;
    let result = runtime.block_on(async {
        let server = Server::bind(&opts.listen, app.clone(), opts.token.clone())
            .await
            .with_context(|| format!("cannot listen on {}", opts.listen))?;
        let addr = server.local_addr()?;
        if !addr.ip().is_loopback() {
            eprintln!(
                "note: listening on {addr}, which is not loopback{}",
                if opts.token.is_some() { "" } else { " and has no --token" }
            );
        }
        println!("Forage UI: http://{addr}/");
        std::io::stdout().flush().ok();
        let shutdown = forage::server::shutdown_signal()?;
        server.serve(shutdown).await?;
        anyhow::Ok(())
    });
    app.shutdown();
    result
}

/// `forage sources …`.
pub fn sources(common: &Common, action: SourcesAction) -> Result<()> {
    let app = open_app(common, embedder(common, false)?, false)?;
    match action {
        SourcesAction::Add { url, interval_s } => {
            let s = app.add_source(&url, interval_s)?;
            println!(
                "source {} added: {} items{}",
                s.id,
                s.items,
                s.last_error.map(|e| format!(" (error: {e})")).unwrap_or_default()
            );
            embed_with_progress(&app)?;
        }
        SourcesAction::List => {
            println!("{:>4}  {:>6}  {:>6}  {:<40}  last error", "id", "items", "mean", "title / url");
            for s in app.sources(None)? {
                let name = s.title.clone().unwrap_or_else(|| s.url.clone());
                let error = s.last_error.as_deref().unwrap_or("-");
                println!("{:>4}  {:>6}  {:>6.3}  {:<40}  {error}", s.id, s.items, s.posterior.mean, name);
            }
        }
        SourcesAction::Remove { id } => {
            app.remove_source(id)?;
            println!("source {id} removed");
        }
        SourcesAction::Import { file } => {
            let bytes = std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let base = file.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."));
            let added = app.import_opml_from(&bytes, &base)?;
            println!("{} sources imported", added.len());
            embed_with_progress(&app)?;
        }
    }
    app.shutdown();
    Ok(())
}

/// `forage refresh`.
pub fn refresh(common: &Common, source: Option<i64>) -> Result<()> {
    let app = open_app(common, embedder(common, false)?, false)?;
    for r in app.refresh(source)? {
        match r.error {
            Some(e) => println!("source {}: error: {e}", r.id),
            None if r.not_modified => println!("source {}: not modified", r.id),
            None => println!("source {}: {} new items", r.id, r.new_items),
        }
    }
    embed_with_progress(&app)?;
    app.shutdown();
    Ok(())
}

/// `forage model install`.
pub fn model_install(model_dir: Option<PathBuf>) -> Result<()> {
    let dir =
        model_dir.or_else(default_model_dir).context("no model folder: pass --model-dir or set HOME")?;
    eprintln!("installing all-MiniLM-L6-v2 into {} …", dir.display());
    let dir = install_model(&dir)?;
    println!("model installed and verified in {}", dir.display());
    Ok(())
}

/// `forage labels …`.
pub fn labels(common: &Common, action: LabelsAction) -> Result<()> {
    let app = open_app(common, embedder(common, false)?, false)?;
    match action {
        LabelsAction::List => {
            println!("{:>4}  {:<24}  {:>11}  {:>6}  examples", "id", "name", "threshold", "items");
            for l in app.labels()? {
                let l2 = &l.label;
                let threshold =
                    if l2.calibrated { "calibrated".to_owned() } else { format!("{:.2}", l2.threshold) };
                let strict = if l2.strict { " (strict)" } else { "" };
                println!(
                    "{:>4}  {:<24}  {:>11}  {:>6}  {}{strict}",
                    l2.id,
                    l2.name,
                    threshold,
                    l.items,
                    l2.examples.len()
                );
            }
        }
        LabelsAction::Add { name, examples, threshold, strict } => {
            embed_with_progress(&app)?;
            let l = app.create_label(NewLabel { name, examples, threshold, strict })?;
            println!("label {} `{}` created: {} items", l.label.id, l.label.name, l.items);
        }
        LabelsAction::Edit { id, name, examples, threshold, calibrate, strict } => {
            let examples = (!examples.is_empty()).then_some(examples);
            let calibrated = calibrate.then_some(true);
            let l = app.edit_label(id, LabelEdit { name, examples, threshold, calibrated, strict })?;
            println!("label {} `{}` updated: {} items", l.label.id, l.label.name, l.items);
        }
        LabelsAction::Rm { id } => {
            app.delete_label(id)?;
            println!("label {id} deleted");
        }
        LabelsAction::Eval { file } => {
            let report = forage::labels::eval::evaluate_file(&file, &app.catalog(), app.embedder().as_ref())?;
            print!("{}", report.to_table());
        }
    }
    app.shutdown();
    Ok(())
}

/// `forage eval`.
pub fn eval(common: &Common) -> Result<()> {
    let app = open_app(common, Arc::new(forage::embed::LexicalEmbedder::new()), false)?;
    let summary = app.evaluate_policies()?;
    app.shutdown();
    print!("{}", eval_table(&summary));
    Ok(())
}

/// Share of `n` below which `forage eval` marks an estimate's effective sample size as few.
const EVAL_ESS_SHARE_MIN: f64 = 0.05;

/// The evaluation for people: a headline, one line per policy, what the columns mean.
fn eval_table(summary: &forage::app::EvalSummary) -> String {
    let mut out = format!(
        "{} logged impressions{}, like rate as logged {:.4}\n",
        summary.impressions,
        if summary.truncated {
            format!(" (truncated: the first {} read)", forage::bandit::ips::LOGS_MAX)
        } else {
            String::new()
        },
        summary.logged_reward
    );
    if summary.source_level_only > 0 {
        out += &format!(
            "{} of them are older logs with their source's propensity only: it stands in for the item's \
             (exact when the source's choice of item was certain, otherwise an overstatement); policies \
             that need the newer attributes skip them\n",
            summary.source_level_only
        );
    }
    out += &format!(
        "\n{:<16} {:>7} {:>7} {:>8} {:>9} {:>8}  {}\n",
        "policy", "ips", "snips", "n", "ess", "skipped", "what it does"
    );
    for e in &summary.estimates {
        // Fewer effective samples than this share of n: the weights rest on a handful.
        let few = e.n > 0 && e.effective_sample_size < EVAL_ESS_SHARE_MIN * e.n as f64;
        out += &format!(
            "{:<16} {:>7.4} {:>7.4} {:>8} {:>9.1} {:>8}  {}{}\n",
            e.policy,
            e.ips,
            e.snips,
            e.n,
            e.effective_sample_size,
            e.skipped,
            if few { "(few effective samples) " } else { "" },
            e.description
        );
    }
    out += "\n\
        ips      inverse propensity scoring: the policy's estimated like rate (unbiased when the \
        propensities are right, but noisy)\n\
        snips    self-normalised IPS: less noise, a little bias\n\
        ess      effective sample size of the weights: far below n, the estimate rests on a few \
        impressions\n\
        skipped  impressions the policy could not be scored on (older logs lack what it needs)\n";
    out
}

/// `forage export`.
pub fn export(common: &Common, format: &str, out: &Path, test_fraction: f64, seed: u64) -> Result<()> {
    let format = match format {
        "dpo" => ExportFormat::Dpo,
        "kto" => ExportFormat::Kto,
        "reward" => ExportFormat::Reward,
        other => bail!("--format `{other}` is not one of dpo, kto, reward"),
    };
    let app = open_app(common, embedder(common, false)?, false)?;
    embed_with_progress(&app)?;
    let req = ExportRequest { format, test_fraction, seed };
    let summary = if out == Path::new("-") {
        let mut stdout = std::io::BufWriter::new(std::io::stdout());
        let summary = app.export(&req, &mut stdout)?;
        stdout.flush()?;
        summary
    } else {
        let tmp = out.with_extension("partial");
        let file = std::fs::File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
        let mut writer = std::io::BufWriter::new(file);
        let summary = app.export(&req, &mut writer)?;
        writer.flush()?;
        writer.get_ref().sync_all()?;
        std::fs::rename(&tmp, out).with_context(|| format!("cannot move the export to {}", out.display()))?;
        summary
    };
    eprintln!("{} rows ({:?}) written to {}", summary.rows, summary.rows_by_source, out.display());
    app.shutdown();
    Ok(())
}
