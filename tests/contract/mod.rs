//! The behaviour every backend owes, written once against the traits and run on each
//! stack (tests/backends.rs): the embedded one, MongoDB + Redis, and Qdrant when one is
//! reachable. Tenants get a fresh suffix per call, so runs sharing one server never meet.
#![allow(dead_code)]

use std::time::Duration;

use fieldvox::cache::Cache;
use fieldvox::rag::terms::query_terms;
use fieldvox::store::{
    Chunk, Holdings, Job, JobState, Manual, ManualFilter, MetadataStore, TurnEntry, TurnFilter, UsageRow,
};
use fieldvox::vector::{ChunkPoint, DIMENSIONS, VectorIndex, VectorQuery};
use fieldvox_formats::protocol::{Citation, Timings};
use uuid::Uuid;

/// A tenant id no other test run uses.
pub fn tenant(name: &str) -> String {
    format!("{name}-{}", &Uuid::new_v4().simple().to_string()[..8])
}

pub fn manual(tenant: &str, text: &str) -> (Manual, Vec<Chunk>) {
    let id = Uuid::new_v4();
    let m = Manual {
        id,
        tenant: tenant.into(),
        equipment: "RTU-40".into(),
        title: "RTU-40 Service Manual".into(),
        filename: "rtu40.pdf".into(),
        version: 1,
        pages: 2,
        chunks: 1,
        size: 10,
        sha256: format!("{id}"),
        uploaded_by: "admin-1".into(),
        blank_pages: vec![1],
        created_at: 1,
        updated_at: 2,
    };
    let c = Chunk {
        id: Uuid::new_v4(),
        tenant: tenant.into(),
        manual_id: id,
        equipment: "RTU-40".into(),
        page: 2,
        section: "Compressor".into(),
        seq: 0,
        text: text.into(),
    };
    (m, vec![c])
}

/// Begin, add the chunks, publish: what an ingest does.
pub async fn insert(store: &dyn MetadataStore, m: &Manual, chunks: Vec<Chunk>) -> Vec<Uuid> {
    let mut job = Job::queued(m);
    store.begin_manual(m, &job).await.unwrap();
    store.add_chunks(chunks).await.unwrap();
    let replaced = store.publish_manual(m).await.unwrap();
    job.state = JobState::Done;
    store.put_job(&job).await.unwrap();
    replaced
}

fn all() -> ManualFilter {
    ManualFilter { limit: 100, ..ManualFilter::default() }
}

async fn texts_found(store: &dyn MetadataStore, tenant: &str, question: &str) -> Vec<String> {
    let hits = store.keyword_search(tenant, None, &query_terms(question), 10).await.unwrap();
    let ids: Vec<Uuid> = hits.iter().map(|h| h.chunk_id).collect();
    store.chunks(tenant, &ids).await.unwrap().into_iter().map(|c| c.chunk.text).collect()
}

/// Every metadata-store behaviour, in one pass.
pub async fn metadata_store(store: &dyn MetadataStore) {
    store.ping().await.expect("the store answers");
    chunks_are_tenant_scoped_and_versions_bump(store).await;
    keyword_search_finds_codes_within_the_tenant_only(store).await;
    a_manual_being_ingested_is_invisible_and_a_new_version_replaces_the_old_at_once(store).await;
    listings_page_by_cursor_and_jobs_persist(store).await;
    turns_are_listed_newest_first_and_counted_per_user_and_day(store).await;
    a_manual_exported_and_imported_is_the_same_manual(store).await;
}

async fn chunks_are_tenant_scoped_and_versions_bump(store: &dyn MetadataStore) {
    let (a, b) = (tenant("a"), tenant("b"));
    let (ma, ca) = manual(&a, "38 N·m");
    let chunk_a = ca[0].id;
    insert(store, &ma, ca).await;
    let got = store.chunks(&a, &[chunk_a]).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].manual_title, "RTU-40 Service Manual");
    assert_eq!(got[0].chunk.page, 2);
    assert_eq!(got[0].chunk.section, "Compressor");
    assert!(store.chunks(&b, &[chunk_a]).await.unwrap().is_empty(), "tenant b cannot read a's chunk");
    assert_eq!(store.list_manuals(&a, &all()).await.unwrap(), vec![ma.clone()]);
    assert_eq!(store.manual(&a, ma.id).await.unwrap(), Some(ma.clone()));
    assert_eq!(store.manual(&b, ma.id).await.unwrap(), None);
    assert!(store.list_manuals(&b, &all()).await.unwrap().is_empty());

    assert_eq!(store.kb_version(&a).await.unwrap(), 1, "publishing bumped it");
    assert_eq!(store.bump_kb_version(&a).await.unwrap(), 2);
    assert_eq!(store.bump_kb_version(&a).await.unwrap(), 3);
    assert_eq!(store.kb_version(&b).await.unwrap(), 0);
}

async fn keyword_search_finds_codes_within_the_tenant_only(store: &dyn MetadataStore) {
    let acme = tenant("acme");
    let (ma, ca) = manual(&acme, "Fault E47 means low oil pressure. Filter HX-FLT-0440.");
    let a = ca[0].id;
    insert(store, &ma, ca).await;
    // Same words in another tenant, and in a tenant whose id extends this one.
    for other in [tenant("globex"), format!("{acme}-1")] {
        let (m, c) = manual(&other, "Fault E47 means fan failure. Filter HX-FLT-0440.");
        insert(store, &m, c).await;
    }
    let hits = store.keyword_search(&acme, None, &query_terms("what does e 47 mean"), 10).await.unwrap();
    assert_eq!(hits.iter().map(|h| h.chunk_id).collect::<Vec<_>>(), vec![a]);
    assert!(hits[0].score > 0.0, "higher is better");
    let hits = store.keyword_search(&acme, None, &query_terms("part HX FLT 0440"), 10).await.unwrap();
    assert_eq!(hits.len(), 1, "{hits:?}");
    assert!(store.keyword_search(&acme, Some("BW-9"), &query_terms("E47"), 10).await.unwrap().is_empty());
    assert_eq!(store.keyword_search(&acme, Some("RTU-40"), &query_terms("E47"), 10).await.unwrap().len(), 1);
    assert!(store.keyword_search(&tenant("nobody"), None, &query_terms("E47"), 10).await.unwrap().is_empty());
    assert!(store.keyword_search(&acme, None, &[], 10).await.unwrap().is_empty());

    // The better match ranks first.
    let (mb, cb) = manual(&acme, "Oil pressure: check the oil pressure switch, then the oil pump.");
    let mut mb = mb;
    mb.title = "Oil guide".into();
    let oil = cb[0].id;
    insert(store, &mb, cb).await;
    let hits = store.keyword_search(&acme, None, &query_terms("oil pressure switch"), 10).await.unwrap();
    assert_eq!(hits.first().map(|h| h.chunk_id), Some(oil), "{hits:?}");

    let vocabulary = store.vocabulary(&acme).await.unwrap();
    assert_eq!(vocabulary, vec!["E47", "HX-FLT-0440", "RTU-40"], "codes and the equipment id");
    assert!(store.vocabulary(&tenant("nobody")).await.unwrap().is_empty());
}

async fn a_manual_being_ingested_is_invisible_and_a_new_version_replaces_the_old_at_once(store: &dyn MetadataStore) {
    let (acme, globex) = (tenant("acme"), tenant("globex"));
    let (v1, c1) = manual(&acme, "Head bolts take 38 N·m.");
    insert(store, &v1, c1.clone()).await;
    let (mut v2, mut c2) = manual(&acme, "Head bolts take 41 N·m.");
    v2.version = 2;
    c2[0].manual_id = v2.id;
    store.begin_manual(&v2, &Job::queued(&v2)).await.unwrap();
    store.add_chunks(c2.clone()).await.unwrap();
    assert_eq!(texts_found(store, &acme, "head bolts").await, vec!["Head bolts take 38 N·m."], "v2 is invisible");
    assert!(store.chunks(&acme, &[c2[0].id]).await.unwrap().is_empty());
    assert!(store.manual(&acme, v2.id).await.unwrap().is_none());
    assert_eq!(store.latest_version(&acme, "RTU-40", "RTU-40 Service Manual").await.unwrap(), 2);
    assert_eq!(store.holdings(&acme).await.unwrap(), Holdings { manuals: 2, chunks: 2 });

    assert_eq!(store.publish_manual(&v2).await.unwrap(), vec![v1.id], "v1 replaced");
    assert_eq!(texts_found(store, &acme, "head bolts").await, vec!["Head bolts take 41 N·m."]);
    assert_eq!(store.holdings(&acme).await.unwrap(), Holdings { manuals: 1, chunks: 1 });
    assert_eq!(store.page_text(&acme, v2.id, 2).await.unwrap(), vec!["Head bolts take 41 N·m."]);
    assert!(store.page_text(&globex, v2.id, 2).await.unwrap().is_empty(), "another tenant reads nothing");
    assert_eq!(store.equipment(&acme).await.unwrap(), vec![("RTU-40".to_string(), 1)]);
    assert_eq!(store.manual_by_sha256(&acme, &v2.sha256).await.unwrap().map(|m| m.id), Some(v2.id));
    assert!(store.manual_by_sha256(&globex, &v2.sha256).await.unwrap().is_none());

    let version = store.kb_version(&acme).await.unwrap();
    assert!(!store.delete_manual(&globex, v2.id).await.unwrap(), "not another tenant's to delete");
    assert!(store.delete_manual(&acme, v2.id).await.unwrap());
    assert_eq!(store.kb_version(&acme).await.unwrap(), version + 1, "a delete expires cached results");
    assert_eq!(store.holdings(&acme).await.unwrap(), Holdings::default());
    assert!(store.vocabulary(&acme).await.unwrap().is_empty());
    assert!(texts_found(store, &acme, "head bolts").await.is_empty());
}

async fn listings_page_by_cursor_and_jobs_persist(store: &dyn MetadataStore) {
    let (acme, globex) = (tenant("acme"), tenant("globex"));
    let mut ids = Vec::new();
    for i in 0..5 {
        let (mut m, c) = manual(&acme, "38 N·m");
        m.title = format!("Manual {i}");
        m.created_at = 10 + i;
        if i == 4 {
            m.equipment = "BW-9".into();
        }
        insert(store, &m, c).await;
        ids.push(m.id);
    }
    let mut filter = ManualFilter { limit: 2, ..ManualFilter::default() };
    let mut seen = Vec::new();
    loop {
        let page = store.list_manuals(&acme, &filter).await.unwrap();
        let Some(last) = page.last() else { break };
        filter.after = Some((last.created_at, last.id));
        seen.extend(page.iter().map(|m| m.id));
    }
    assert_eq!(seen, ids, "every manual once, in upload order");
    let only = ManualFilter { equipment: Some("BW-9".into()), limit: 10, after: None };
    assert_eq!(store.list_manuals(&acme, &only).await.unwrap().len(), 1);
    assert_eq!(store.equipment(&acme).await.unwrap(), vec![("BW-9".to_string(), 1), ("RTU-40".to_string(), 4)]);

    let (m, _) = manual(&acme, "");
    let mut job = Job::queued(&m);
    store.begin_manual(&m, &job).await.unwrap();
    job.state = JobState::Embedding;
    job.chunks_done = 3;
    store.put_job(&job).await.unwrap();
    assert_eq!(store.job(&acme, job.id).await.unwrap(), Some(job.clone()));
    assert_eq!(store.job(&globex, job.id).await.unwrap(), None);
    let unfinished = |jobs: Vec<Job>| jobs.into_iter().filter(|j| j.tenant == acme).collect::<Vec<_>>();
    assert_eq!(unfinished(store.unfinished_jobs().await.unwrap()), vec![job.clone()]);
    job.state = JobState::Failed;
    store.put_job(&job).await.unwrap();
    assert!(unfinished(store.unfinished_jobs().await.unwrap()).is_empty());
}

pub fn turn(tenant: &str, user: &str, at: u64, transcript: &str) -> TurnEntry {
    TurnEntry {
        id: Uuid::new_v4(),
        tenant: tenant.into(),
        user: user.into(),
        session: Uuid::new_v4(),
        at,
        day: TurnEntry::day_of(at),
        status: "completed".into(),
        error: None,
        transcript: transcript.into(),
        answer: format!("answer to {transcript}"),
        citations: vec![Citation { manual_id: Uuid::new_v4().to_string(), title: "T".into(), page: 3, score: 0.5 }],
        timings: Timings {
            stt_ms: Some(120.0),
            voice_to_voice_ms: Some(900.0),
            total_ms: 1500.0,
            ..Timings::default()
        },
        audio_in_secs: 2.5,
        audio_out_secs: 4.0,
    }
}

async fn turns_are_listed_newest_first_and_counted_per_user_and_day(store: &dyn MetadataStore) {
    let (acme, globex) = (tenant("acme"), tenant("globex"));
    // 2026-11-29 23:59:59 and 2026-11-30 00:00:00 UTC: two days.
    let (late, midnight) = (1_795_996_799, 1_795_996_800);
    assert_eq!(TurnEntry::day_of(late), "2026-11-29");
    assert_eq!(TurnEntry::day_of(midnight), "2026-11-30");
    let turns = [
        turn(&acme, "tech-1", late, "q1"),
        turn(&acme, "tech-1", midnight, "q2"),
        turn(&acme, "tech-2", midnight + 5, "q3"),
        turn(&acme, "tech-1", midnight + 10, "q4"),
    ];
    for t in &turns {
        store.record_turn(t).await.unwrap();
    }
    store.record_turn(&turn(&globex, "tech-1", midnight, "theirs")).await.unwrap();

    let page = |filter: TurnFilter| {
        let acme = acme.clone();
        async move { store.turns(&acme, &filter).await.unwrap() }
    };
    let newest = page(TurnFilter { limit: 10, ..TurnFilter::default() }).await;
    assert_eq!(newest.iter().map(|t| t.transcript.as_str()).collect::<Vec<_>>(), ["q4", "q3", "q2", "q1"]);
    assert_eq!(newest[0], turns[3], "every field round-trips");
    let mut filter = TurnFilter { limit: 3, ..TurnFilter::default() };
    let first = page(filter.clone()).await;
    filter.before = first.last().map(|t| (t.at, t.id));
    assert_eq!(page(filter).await.iter().map(|t| t.transcript.as_str()).collect::<Vec<_>>(), ["q1"]);
    let tech2 = page(TurnFilter { user: Some("tech-2".into()), limit: 10, ..TurnFilter::default() }).await;
    assert_eq!(tech2.len(), 1);
    let window =
        page(TurnFilter { since: Some(midnight), until: Some(midnight + 10), limit: 10, ..TurnFilter::default() })
            .await;
    assert_eq!(window.iter().map(|t| t.transcript.as_str()).collect::<Vec<_>>(), ["q3", "q2"]);

    let usage = store.usage(&acme, 0, u64::MAX / 2).await.unwrap();
    let row = |user: &str, day: &str, turns: u64| UsageRow {
        user: user.into(),
        day: day.into(),
        turns,
        audio_in_secs: 2.5 * turns as f64,
        audio_out_secs: 4.0 * turns as f64,
    };
    assert_eq!(
        usage,
        vec![row("tech-1", "2026-11-29", 1), row("tech-1", "2026-11-30", 2), row("tech-2", "2026-11-30", 1)]
    );
    assert_eq!(store.usage(&acme, midnight + 6, midnight + 100).await.unwrap(), vec![row("tech-1", "2026-11-30", 1)]);
    assert!(store.usage(&tenant("nobody"), 0, u64::MAX / 2).await.unwrap().is_empty());
    let tenants = store.tenants().await.unwrap();
    assert!(tenants.contains(&acme) && tenants.contains(&globex));

    // An imported turn is kept once.
    store.import_turn(&turns[0]).await.unwrap();
    assert_eq!(page(TurnFilter { limit: 10, ..TurnFilter::default() }).await.len(), 4);
}

async fn a_manual_exported_and_imported_is_the_same_manual(store: &dyn MetadataStore) {
    let acme = tenant("acme");
    let (m, c) = manual(&acme, "Fault E47 means low oil pressure.");
    insert(store, &m, c.clone()).await;
    let export = store.export_manual(&acme, m.id).await.unwrap().expect("live manual exports");
    assert_eq!(export.manual, m);
    assert_eq!(export.chunks, c);
    assert!(store.export_manual(&tenant("globex"), m.id).await.unwrap().is_none());
    // Into a fresh tenant of the same store: the same ids, live at once, searchable.
    store.delete_manual(&acme, m.id).await.unwrap();
    assert!(store.manual(&acme, m.id).await.unwrap().is_none());
    let version = store.kb_version(&acme).await.unwrap();
    store.import_manual(&export).await.unwrap();
    store.import_manual(&export).await.unwrap();
    assert_eq!(store.manual(&acme, m.id).await.unwrap(), Some(m.clone()));
    assert_eq!(store.holdings(&acme).await.unwrap(), Holdings { manuals: 1, chunks: 1 }, "twice is once");
    assert!(store.kb_version(&acme).await.unwrap() > version);
    assert_eq!(texts_found(store, &acme, "E47").await, vec!["Fault E47 means low oil pressure."]);
}

fn axis(i: usize) -> Vec<f32> {
    let mut v = vec![0.0; DIMENSIONS];
    v[i % DIMENSIONS] = 1.0;
    v
}

fn point(tenant: &str, equipment: &str, manual_id: Uuid, vector: Vec<f32>) -> ChunkPoint {
    ChunkPoint {
        chunk_id: Uuid::new_v4(),
        tenant: tenant.into(),
        equipment: equipment.into(),
        manual_id,
        page: 1,
        vector,
    }
}

fn query(tenant: &str, equipment: Option<&str>, vector: Vec<f32>) -> VectorQuery {
    VectorQuery { tenant: tenant.into(), equipment: equipment.map(str::to_string), vector, limit: 10 }
}

/// Every vector-index behaviour, in one pass.
pub async fn vector_index(index: &dyn VectorIndex) {
    index.ping().await.expect("the index answers");
    let (acme, globex) = (tenant("acme"), tenant("globex"));
    let (manual_a, manual_b) = (Uuid::new_v4(), Uuid::new_v4());
    let a1 = point(&acme, "RTU-40", manual_a, axis(0));
    let a2 = point(&acme, "BW-9", manual_a, axis(1));
    let a3 = point(&acme, "RTU-40", manual_b, axis(2));
    let g1 = point(&globex, "RTU-40", Uuid::new_v4(), axis(0));
    index.upsert(vec![a1.clone(), a2.clone(), a3.clone(), g1.clone()]).await.unwrap();

    let hits = index.search(query(&acme, None, axis(0))).await.unwrap();
    assert_eq!(hits.first().map(|h| h.chunk_id), Some(a1.chunk_id), "nearest first");
    assert!(hits.iter().all(|h| h.chunk_id != g1.chunk_id), "never another tenant's point");
    assert!(hits.windows(2).all(|w| w[0].score >= w[1].score), "best first");
    let narrowed = index.search(query(&acme, Some("BW-9"), axis(0))).await.unwrap();
    assert_eq!(narrowed.iter().map(|h| h.chunk_id).collect::<Vec<_>>(), vec![a2.chunk_id]);
    assert!(index.search(query(&tenant("nobody"), None, axis(0))).await.unwrap().is_empty());
    assert!(index.upsert(vec![point(&acme, "RTU-40", manual_a, vec![1.0; 3])]).await.is_err(), "wrong width");

    let vectors = index.vectors(&acme, &[a1.chunk_id, g1.chunk_id]).await.unwrap();
    assert_eq!(vectors, vec![(a1.chunk_id, axis(0))], "only the tenant's own vectors are read");

    index.delete_manual(&globex, manual_a).await.unwrap();
    assert_eq!(index.search(query(&acme, None, axis(0))).await.unwrap().len(), 3, "another tenant deletes nothing");
    index.delete_manual(&acme, manual_a).await.unwrap();
    let left = index.search(query(&acme, None, axis(0))).await.unwrap();
    assert_eq!(left.iter().map(|h| h.chunk_id).collect::<Vec<_>>(), vec![a3.chunk_id]);
    assert_eq!(index.search(query(&globex, None, axis(0))).await.unwrap().len(), 1);
}

/// Cache behaviour: what is set is got, until its TTL passes.
pub async fn cache(cache: &dyn Cache) {
    let key = format!("contract:{}", Uuid::new_v4());
    assert_eq!(cache.get(&key).await, None);
    cache.set(&key, vec![1, 2, 3], Duration::from_secs(60)).await;
    assert_eq!(cache.get(&key).await, Some(vec![1, 2, 3]));
    let brief = format!("contract:{}", Uuid::new_v4());
    cache.set(&brief, vec![9], Duration::from_millis(50)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(cache.get(&brief).await, None, "expired");
}
