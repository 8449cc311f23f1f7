//! Values come out of the store exactly as they went in: floats (extremes, subnormals;
//! negative zero becomes zero on every store), integer extremes, long and non-ASCII strings,
//! nested JSON; JSON a store may rewrite is still recognised on retry; and state loaded from
//! a snapshot equals state from a full replay.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::*;
use crate::aggregate::Aggregate;
use crate::envelope::ReplayEvent;
use crate::event::{DecodeError, Event, EventSet, decode_exact};
use crate::json::MAX_JSON_DEPTH;
use crate::repository::{AsOf, ExecuteError, Repository};

/// A JSON tree with float leaves: what "nested JSON" means to the value checks. Numbers are
/// read as `f64` whatever their spelling (`1e17` or `100000000000000000`), as any typed
/// consumer reads them.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Tree {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A number.
    Number(f64),
    /// A string.
    Text(String),
    /// An array.
    List(Vec<Tree>),
    /// An object.
    Map(BTreeMap<String, Tree>),
}

/// The event of the value checks: one of every kind of value.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Sample {
    /// Floats, including extremes and subnormals.
    pub floats: Vec<f64>,
    /// Signed integers, including the extremes.
    pub ints: Vec<i64>,
    /// Unsigned integers, including the extremes.
    pub uints: Vec<u64>,
    /// A string, possibly long, possibly not ASCII.
    pub text: String,
    /// Nested JSON.
    pub tree: Tree,
}

impl Event for Sample {
    const NAME: &'static str = "Sampled";
    const VERSION: u32 = 1;
}

/// The event set of [`Sampler`].
#[derive(Debug, Clone)]
pub enum SamplerEvent {
    /// A sample was taken.
    Sampled(Sample),
}

impl From<Sample> for SamplerEvent {
    fn from(sample: Sample) -> Self {
        Self::Sampled(sample)
    }
}

impl EventSet for SamplerEvent {
    const NAMES: &'static [&'static str] = &[Sample::NAME];

    fn name(&self) -> &'static str {
        Sample::NAME
    }

    fn version(&self) -> u32 {
        Sample::VERSION
    }

    fn encode(&self) -> Result<Box<RawValue>, serde_json::Error> {
        let Self::Sampled(sample) = self;
        serde_json::value::to_raw_value(sample)
    }

    fn decode(name: &str, version: u32, payload: &RawValue) -> Result<Self, DecodeError> {
        match name {
            Sample::NAME => decode_exact::<Sample>(version, payload).map(Self::Sampled),
            other => Err(DecodeError::UnknownEvent {
                name: other.to_owned(),
                known: Self::NAMES,
            }),
        }
    }
}

/// An aggregate that keeps every sample it was given, snapshotting every 3 events: its state
/// holds every kind of value, so a snapshot that changes one shows.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Sampler {
    /// Every sample, in order.
    pub samples: Vec<Sample>,
}

impl Aggregate for Sampler {
    const TYPE: &'static str = "ConformanceSampler";
    const SNAPSHOT_EVERY: Option<u64> = Some(3);
    type Event = SamplerEvent;

    fn apply_event(&mut self, event: &SamplerEvent) {
        let SamplerEvent::Sampled(sample) = event;
        self.samples.push(sample.clone());
    }

    fn encode_state(&self) -> Option<Result<Box<RawValue>, serde_json::Error>> {
        Some(serde_json::value::to_raw_value(self))
    }

    fn decode_state(state: &RawValue) -> Option<Result<Self, serde_json::Error>> {
        Some(serde_json::from_str(state.get()))
    }
}

/// A value's exact identity: its JSON with floats in shortest round-trip form, so equal text
/// means equal bits (and `-0.0` differs from `0.0`).
pub fn exact<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("test values encode")
}

impl Tree {
    fn normalized(&self) -> Tree {
        match self {
            Tree::Number(x) => Tree::Number(positive_zero(*x)),
            Tree::List(items) => Tree::List(items.iter().map(Tree::normalized).collect()),
            Tree::Map(fields) => Tree::Map(
                fields
                    .iter()
                    .map(|(k, v)| (k.clone(), v.normalized()))
                    .collect(),
            ),
            other => other.clone(),
        }
    }
}

impl Sample {
    /// The sample as every store gives it back: negative zeros made positive.
    pub fn normalized(&self) -> Sample {
        Sample {
            floats: self.floats.iter().copied().map(positive_zero).collect(),
            tree: self.tree.normalized(),
            ..self.clone()
        }
    }

    /// A random sample.
    pub fn generate(rng: &mut Rng) -> Sample {
        let floats = (0..1 + rng.below(8)).map(|_| float(rng)).collect();
        let ints = (0..1 + rng.below(4))
            .map(|_| match rng.below(3) {
                0 => *rng.pick(&[i64::MIN, i64::MAX, i64::MIN + 1, 0, -1, 1]),
                _ => rng.next_u64() as i64,
            })
            .collect();
        let uints = (0..1 + rng.below(4))
            .map(|_| match rng.below(3) {
                0 => *rng.pick(&[u64::MAX, 1 << 63, (1 << 63) - 1, 0, 1]),
                _ => rng.next_u64() >> rng.below(64),
            })
            .collect();
        let length = match rng.below(10) {
            0 => 5_000 + rng.below(20_000),
            1 => 0,
            _ => rng.below(200),
        };
        let depth = if rng.chance(10) { 60 } else { 4 };
        Sample {
            floats,
            ints,
            uints,
            text: text(rng, length as usize),
            tree: tree(rng, depth),
        }
    }
}

fn positive_zero(x: f64) -> f64 {
    if x == 0.0 { 0.0 } else { x }
}

const SPECIAL_FLOATS: [f64; 20] = [
    0.0,
    -0.0,
    f64::MIN_POSITIVE,
    -f64::MIN_POSITIVE,
    5e-324,
    -5e-324,
    f64::from_bits((1 << 52) - 1),
    f64::MAX,
    f64::MIN,
    f64::EPSILON,
    0.1,
    0.908_881_258_613_561_1,
    1e17,
    1e-7,
    9_007_199_254_740_993.0,
    1e308,
    123_456_789.123_456_79,
    1.0,
    -1.5,
    4_503_599_627_370_497.5,
];

fn float(rng: &mut Rng) -> f64 {
    let sign = if rng.chance(50) { -1.0 } else { 1.0 };
    match rng.below(6) {
        0 => *rng.pick(&SPECIAL_FLOATS),
        1 => loop {
            let x = f64::from_bits(rng.next_u64());
            if x.is_finite() {
                break x;
            }
        },
        2 => (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64,
        3 => sign * f64::from_bits(rng.next_u64() & ((1 << 52) - 1)),
        4 => {
            let scale = 10f64.powi(rng.below(12) as i32);
            (rng.below(2_000_001) as f64 - 1e6) / scale
        }
        _ => sign * (rng.next_u64() >> rng.below(64)) as f64,
    }
}

const CHARS: [char; 24] = [
    'a',
    'Z',
    '0',
    ' ',
    '"',
    '\\',
    '/',
    '\u{1}',
    '\u{1f}',
    '\n',
    '\t',
    'é',
    'ß',
    '中',
    'ж',
    '🦀',
    '\u{FFFF}',
    '\u{10FFFF}',
    '\u{0308}',
    '\u{FEFF}',
    '\u{2028}',
    '\u{7f}',
    'ש',
    '\u{E000}',
];

fn text(rng: &mut Rng, length: usize) -> String {
    (0..length).map(|_| *rng.pick(&CHARS)).collect()
}

fn tree(rng: &mut Rng, depth: u32) -> Tree {
    if depth == 0 {
        return Tree::Number(float(rng));
    }
    match rng.below(7) {
        0 => Tree::Null,
        1 => Tree::Bool(rng.chance(50)),
        2 => Tree::Number(float(rng)),
        3 => {
            let length = rng.below(12) as usize;
            Tree::Text(text(rng, length))
        }
        4 => Tree::List(vec![tree(rng, depth - 1)]),
        5 => Tree::List((0..rng.below(4)).map(|_| tree(rng, depth - 1)).collect()),
        _ => Tree::Map(
            (0..rng.below(4))
                .map(|_| {
                    let length = rng.below(6) as usize;
                    (text(rng, length), tree(rng, depth - 1))
                })
                .collect(),
        ),
    }
}

fn decode_sample(payload: &RawValue, what: &str) -> Sample {
    serde_json::from_str(payload.get())
        .unwrap_or_else(|e| panic!("{what}: the stored payload does not decode: {e}"))
}

#[track_caller]
fn assert_same_sample(got: &Sample, want: &Sample, what: &str) {
    assert_eq!(
        exact(got),
        exact(want),
        "{what}: the value changed in the store"
    );
}

/// Metadata compared field by field, its free-form part by JSON value.
#[track_caller]
fn assert_same_metadata(got: &Metadata, want: &Metadata) {
    assert_eq!(
        (got.correlation_id, got.causation_id, &got.user_id),
        (want.correlation_id, want.causation_id, &want.user_id)
    );
    assert!(
        same_json(&exact(&got.extra), &exact(&want.extra)),
        "metadata {} came back as {}",
        exact(&want.extra),
        exact(&got.extra)
    );
}

/// Random samples of every kind of value come back from every read path exactly (negative
/// zero as zero), and so does metadata holding them.
pub async fn values_round_trip_exactly<S: EventStore + Clone + 'static>(store: S) {
    const SAMPLES: usize = 48;
    let mut rng = Rng::for_case("values_round_trip_exactly");
    let s = StreamId::new("ConformanceValues", format!("v-{}", Uuid::now_v7()));
    let mut sent: Vec<(Sample, NewEvent)> = Vec::new();
    let mut appended = Vec::new();
    while sent.len() < SAMPLES {
        let mut batch = Vec::new();
        let size = (1 + rng.below(4)).min((SAMPLES - sent.len()) as u64);
        for _ in 0..size {
            let sample = Sample::generate(&mut rng);
            let metadata = Metadata::by_user(text(&mut rng, 12))
                .with_extra("float", float(&mut rng))
                .with_extra("int", rng.next_u64() as i64)
                .with_extra("text", text(&mut rng, 30));
            let new = NewEvent::from_event(&sample, metadata).expect("encode");
            batch.push((sample, new));
        }
        let recorded = store
            .append(
                &s,
                ExpectedVersion::Exact(sent.len() as u64),
                batch.iter().map(|(_, e)| e.clone()).collect(),
            )
            .await
            .expect("append samples");
        appended.extend(recorded);
        sent.extend(batch);
    }
    let by_stream = read(&store, &s).await;
    let by_log = read_log_all(
        &store,
        0,
        &LogFilter::all().aggregate_types([s.aggregate_type.as_str()]),
    )
    .await;
    let (_, replayed) = store.load_stream(&s, None).await.expect("load_stream");
    assert_eq!(by_stream.len(), SAMPLES);
    assert_eq!(by_log.len(), SAMPLES);
    assert_eq!(replayed.len(), SAMPLES);
    for (i, (sample, new)) in sent.iter().enumerate() {
        let want = sample.normalized();
        let by_id = store
            .read_event(new.event_id)
            .await
            .expect("read_event")
            .expect("stored");
        for (payload, path) in [
            (&appended[i].payload, "the append's result"),
            (&by_stream[i].payload, "read_stream"),
            (&by_log[i].payload, "read_log"),
            (&replayed[i].payload, "load_stream"),
            (&by_id.payload, "read_event"),
        ] {
            let what = format!("sample {i} via {path}");
            assert_same_sample(&decode_sample(payload, &what), &want, &what);
            assert!(
                same_json(payload.get(), new.payload.get()),
                "{what}: not the same JSON value"
            );
        }
        for got in [&by_stream[i].metadata, &by_log[i].metadata, &by_id.metadata] {
            assert_same_metadata(got, &new.metadata);
        }
    }
}

fn deep_arrays(depth: usize, spaced: bool) -> String {
    if spaced {
        format!("{}1{}", "[ ".repeat(depth), " ]".repeat(depth))
    } else {
        format!("{}1{}", "[".repeat(depth), "]".repeat(depth))
    }
}

fn deep_objects(depth: usize, spaced: bool) -> String {
    if spaced {
        format!("{}1{}", "{ \"k\" : ".repeat(depth), " }".repeat(depth))
    } else {
        format!("{}1{}", "{\"k\":".repeat(depth), "}".repeat(depth))
    }
}

/// An identical retry of an event whose JSON a store may rewrite (`1e2` as `100`, `1e400` in
/// full, `-0.0` as `0.0`, key order, whitespace, escapes, nesting up to the limit) is
/// recognised as identical, also when spelled differently but equal in value; a different
/// value is a [`Error::DuplicateEventId`].
pub async fn retries_of_json_the_store_may_normalise_are_identical<
    S: EventStore + Clone + 'static,
>(
    store: S,
) {
    let deep = MAX_JSON_DEPTH;
    // (as first written, the same value spelled otherwise, another value)
    let cases: Vec<(String, String, String)> = vec![
        (
            r#"{"a":1e2}"#.into(),
            r#"{"a":100}"#.into(),
            r#"{"a":1e3}"#.into(),
        ),
        (
            r#"{"a":1E+2}"#.into(),
            r#"{"a":100.000}"#.into(),
            r#"{"a":100.001}"#.into(),
        ),
        (
            r#"{"a":1e400}"#.into(),
            format!(r#"{{"a":1{}}}"#, "0".repeat(400)),
            r#"{"a":1e401}"#.into(),
        ),
        (
            r#"{"a":-1e400}"#.into(),
            r#"{"a":-10e399}"#.into(),
            r#"{"a":1e400}"#.into(),
        ),
        (
            r#"{"a":1e-400}"#.into(),
            r#"{"a":0.1e-399}"#.into(),
            r#"{"a":0}"#.into(),
        ),
        (
            r#"{"a":-0.0}"#.into(),
            r#"{"a":0}"#.into(),
            r#"{"a":-1e-300}"#.into(),
        ),
        (
            r#"{"a":-0}"#.into(),
            r#"{"a":0.0e10}"#.into(),
            r#"{"a":1}"#.into(),
        ),
        (
            r#"{"a":0.10}"#.into(),
            r#"{"a":1e-1}"#.into(),
            r#"{"a":0.11}"#.into(),
        ),
        (
            r#"{"big":123456789012345678901234567890}"#.into(),
            r#"{"big":1.2345678901234567890123456789e29}"#.into(),
            r#"{"big":123456789012345678901234567891}"#.into(),
        ),
        (
            r#"[1.5e300,5e-324]"#.into(),
            r#"[15e299, 0.5e-323]"#.into(),
            r#"[1.5e300,5e-323]"#.into(),
        ),
        (
            r#"{"b":1,"a":2}"#.into(),
            r#"{"a":2,"b":1}"#.into(),
            r#"{"a":1,"b":2}"#.into(),
        ),
        (
            r#" { "a" : [ 1 , 2 ] , "c" : { } } "#.into(),
            r#"{"c":{},"a":[1,2]}"#.into(),
            r#"{"a":[2,1],"c":{}}"#.into(),
        ),
        (
            r#"{"s":"\u00e9\/\ud83e\udd80"}"#.into(),
            r#"{"s":"é/🦀"}"#.into(),
            r#"{"s":"e/🦀"}"#.into(),
        ),
        (
            r#"{"s":"\u0001\n\""}"#.into(),
            r#"{"s":"\u0001\u000a\u0022"}"#.into(),
            r#"{"s":"\u0002\n\""}"#.into(),
        ),
        (
            deep_arrays(deep, false),
            deep_arrays(deep, true),
            deep_arrays(deep - 1, false),
        ),
        (
            deep_objects(deep, false),
            deep_objects(deep, true),
            deep_objects(deep - 1, false),
        ),
    ];
    for (i, (first, same, other)) in cases.iter().enumerate() {
        let s = stream(&format!("normalise-{i}"));
        let mut original = event("E", 0);
        original.payload = raw(first);
        let stored = store
            .append(&s, ExpectedVersion::NoStream, vec![original.clone()])
            .await
            .unwrap_or_else(|e| panic!("case {i}: {first:.80} is accepted: {e}"));
        let read_back = read(&store, &s).await;
        assert!(
            same_json(read_back[0].payload.get(), first),
            "case {i}: the stored value equals the appended one"
        );
        let identical = store
            .append(&s, ExpectedVersion::NoStream, vec![original.clone()])
            .await
            .unwrap_or_else(|e| panic!("case {i}: an identical retry of {first:.80}: {e}"));
        assert_same_record(&identical[0], &stored[0], "an identical retry");
        let mut respelled = original.clone();
        respelled.payload = raw(same);
        let equal = store
            .append(&s, ExpectedVersion::Any, vec![respelled])
            .await
            .unwrap_or_else(|e| panic!("case {i}: {same:.80} equals {first:.80}: {e}"));
        assert_same_record(&equal[0], &stored[0], "a retry spelled differently");
        let mut changed = original.clone();
        changed.payload = raw(other);
        assert_duplicate(
            store.append(&s, ExpectedVersion::Any, vec![changed]).await,
            original.event_id,
            &s,
        );
        assert_eq!(store.stream_version(&s).await.expect("version"), 1);
    }
}

/// Commands deciding random samples through the repository (state cache on, snapshots every 3
/// events): the state a command sees, the state loaded from a snapshot, every state as of a
/// version, and a full replay all equal a model built from the samples themselves.
pub async fn state_from_a_snapshot_equals_a_full_replay<S: EventStore + Clone + 'static>(store: S) {
    const COMMANDS: usize = 40;
    let mut rng = Rng::for_case("state_from_a_snapshot_equals_a_full_replay");
    let id = format!("sampler-{}", Uuid::now_v7());
    let repository = Repository::<Sampler, _>::new(store.clone());
    let mut model = Sampler::default();
    let mut models = vec![exact(&model)];
    for i in 0..COMMANDS {
        let sample = Sample::generate(&mut rng);
        let mut seen = None;
        let decided = sample.clone();
        let result = repository
            .execute(&id, Metadata::by_user("values"), |state: &Sampler| {
                seen = Some(exact(state));
                Ok::<_, String>(decided.clone())
            })
            .await;
        match result {
            Ok(committed) => assert_eq!(committed.version, i as u64 + 1),
            Err(ExecuteError::Rejected(e)) => panic!("command {i} rejected: {e}"),
            Err(ExecuteError::Store(e)) => panic!("command {i}: {e}"),
        }
        assert_eq!(
            seen.as_deref(),
            Some(exact(&model).as_str()),
            "command {i} decided on the state a replay gives"
        );
        model.samples.push(sample.normalized());
        models.push(exact(&model));
    }
    let stream = StreamId::new(Sampler::TYPE, id.as_str());
    let snapshot = store
        .load_snapshot(&stream)
        .await
        .expect("load_snapshot")
        .expect("a snapshot every 3 events");
    assert_eq!(
        snapshot.version, 39,
        "the latest snapshot is at the last multiple of 3"
    );
    let mut replayed = Sampler::default();
    for recorded in read(&store, &stream).await {
        replayed.apply_event(&recorded.decode().expect("stored samples decode"));
    }
    assert_eq!(
        exact(&replayed),
        models[COMMANDS],
        "a full replay equals the model"
    );
    let loaded = Repository::<Sampler, _>::new(store.clone())
        .load(&id)
        .await
        .expect("load");
    assert_eq!(loaded.version, COMMANDS as u64);
    assert_eq!(
        exact(&loaded.state),
        models[COMMANDS],
        "loaded from the snapshot plus one event, the state equals a full replay"
    );
    let snapshot_state: Sampler =
        serde_json::from_str(snapshot.state.get()).expect("the snapshot decodes");
    assert_eq!(
        exact(&snapshot_state),
        models[39],
        "the snapshot holds the replayed state"
    );
    for version in [0, 1, 2, 3, 4, 20, 39, 40] {
        let as_of = repository
            .load_as_of(&id, AsOf::Version(version))
            .await
            .expect("load_as_of");
        assert_eq!(as_of.version, version);
        assert_eq!(
            exact(&as_of.state),
            models[version as usize],
            "as of version {version}"
        );
    }
    let (with_snapshot, after) = store
        .load_stream(&stream, Some(Sampler::STATE_VERSION))
        .await
        .expect("load_stream");
    assert_eq!(with_snapshot.map(|s| s.version), Some(39));
    assert_eq!(
        after
            .iter()
            .map(|e: &ReplayEvent| e.version)
            .collect::<Vec<_>>(),
        [40]
    );
}
