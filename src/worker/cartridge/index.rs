//! The in-RAM tantivy index over every loaded fact, and the confidence of
//! an answer (see [`FactIndex::search`]).

use std::collections::HashMap;

use tantivy::collector::TopDocs;
use tantivy::query::BooleanQuery;
use tantivy::schema::{FAST, Field, IndexRecordOption, Schema, TextFieldIndexing, TextOptions};
use tantivy::tokenizer::{
    AsciiFoldingFilter, Language, LowerCaser, RemoveLongFilter, SimpleTokenizer, Stemmer,
    StopWordFilter, TextAnalyzer,
};
use tantivy::{Index, IndexWriter, ReloadPolicy, Searcher, TantivyDocument, Term};

use super::CartridgeError;
use super::load::{Fingerprint, LoadReport, Loaded};

/// The name the analyzer is registered under in the index.
const ANALYZER: &str = "kitbash_en";
/// Candidates the BM25 search returns: the best fact and its rivals.
/// Generous, so that a fact covering the whole query is among them even
/// when shorter facts repeating one of its terms score higher.
const CANDIDATES: usize = 32;
/// Temperature of the softmax behind exclusivity (see
/// [`FactIndex::search`]): a rival whose coverage is 0.05 below the best
/// one weighs e⁻¹ as much; 0.25 below (the usual gap when it lacks the
/// query's attribute word), e⁻⁵.
const TEMPERATURE: f64 = 0.05;

/// Words that carry no content in a question (on top of the Lucene English
/// stop words tantivy ships): question words, auxiliaries, pronouns and
/// politeness. Without them "What is the capital of Peru?" would ask the
/// facts for "what", a word they rarely contain, and so a rare, heavy term.
const QUESTION_WORDS: &[&str] = &[
    "what", "whats", "which", "who", "whom", "whose", "where", "when", "why", "how", "do", "does",
    "did", "can", "could", "would", "should", "has", "have", "had", "were", "been", "am", "i",
    "me", "my", "you", "your", "we", "our", "us", "its", "s", "t", "tell", "please", "know",
    "about", "many", "much", "name",
];

/// Lower-cases, folds accents (so "Sao Tome" finds "São Tomé"), drops
/// stop words and question words, and stems (English Snowball). Facts and
/// queries go through the same analyzer.
pub fn analyzer() -> TextAnalyzer {
    let lucene = StopWordFilter::new(Language::English)
        .expect("tantivy is built with the `stopwords` feature");
    TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(40))
        .filter(LowerCaser)
        .filter(AsciiFoldingFilter)
        .filter(lucene)
        .filter(StopWordFilter::remove(
            QUESTION_WORDS.iter().map(|w| w.to_string()),
        ))
        .filter(Stemmer::new(Language::English))
        .build()
}

/// The distinct terms of `text`, in order of first appearance.
fn terms(analyzer: &mut TextAnalyzer, text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut stream = analyzer.token_stream(text);
    while let Some(tok) = stream.next() {
        if !out.contains(&tok.text) {
            out.push(tok.text.clone());
        }
    }
    out
}

/// One fact in the index.
#[derive(Debug)]
struct Fact {
    cartridge: u32,
    id: String,
    text: String,
    source: Option<String>,
    /// Its distinct term ids, sorted (for the coverage of a query).
    terms: Box<[u32]>,
}

/// The best fact for a query, with the parts of its confidence.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    /// The cartridge (file stem) holding the fact.
    pub cartridge: String,
    /// The fact id.
    pub fact_id: String,
    /// The fact text: the answer.
    pub text: String,
    /// The fact's own `source` field, when it has one.
    pub fact_source: Option<String>,
    /// Calibrated confidence in [0, 1]: `coverage × exclusivity`.
    pub confidence: f64,
    /// Share of the query's IDF weight that the fact contains, in [0, 1].
    pub coverage: f64,
    /// Softmax weight of the fact among the BM25 candidates, in (0, 1].
    pub exclusivity: f64,
    /// The raw BM25 score.
    pub score: f32,
}

impl Hit {
    /// `<cartridge>#<fact id>`, the reply's `source`.
    pub fn source(&self) -> String {
        format!("{}#{}", self.cartridge, self.fact_id)
    }
}

/// An immutable index over one load of the cartridges. Reloading builds a
/// new one; queries in progress finish on the one they started with.
pub struct FactIndex {
    cartridges: Vec<String>,
    facts: Vec<Fact>,
    /// Term → term id.
    vocab: HashMap<String, u32>,
    /// Document frequency per term id (facts containing the term); the same
    /// numbers tantivy's BM25 uses, as the same analyzer made both.
    df: Vec<u32>,
    field: Field,
    /// Tantivy doc address → fact index, per segment.
    doc_to_fact: Vec<Vec<u32>>,
    /// One searcher for the index's whole life: nothing is ever added to
    /// it, so it never needs reopening.
    searcher: Searcher,
    analyzer: TextAnalyzer,
    /// What the load that built it read and skipped.
    pub report: LoadReport,
    /// The stamps of what it was built from.
    pub(crate) fingerprint: Fingerprint,
}

impl FactIndex {
    /// Indexes `loaded`.
    pub(crate) fn build(loaded: Loaded) -> Result<Self, CartridgeError> {
        let Loaded {
            cartridges,
            facts: raw,
            report,
            fingerprint,
        } = loaded;
        let mut sb = Schema::builder();
        let indexing = TextFieldIndexing::default()
            .set_tokenizer(ANALYZER)
            .set_index_option(IndexRecordOption::WithFreqs);
        let field = sb.add_text_field(
            "text",
            TextOptions::default().set_indexing_options(indexing),
        );
        let ord = sb.add_u64_field("ord", FAST);
        let index = Index::create_in_ram(sb.build());
        index.tokenizers().register(ANALYZER, analyzer());

        let mut analyzer = analyzer();
        let mut vocab: HashMap<String, u32> = HashMap::new();
        let mut df: Vec<u32> = Vec::new();
        let mut facts = Vec::with_capacity(raw.len());
        // One indexing thread: the facts are short, and a worker answering
        // jobs while it reloads should not lose its cores to the rebuild.
        let mut writer: IndexWriter = index.writer_with_num_threads(1, 64 << 20)?;
        writer.set_merge_policy(Box::new(tantivy::indexer::NoMergePolicy));
        for (i, f) in raw.into_iter().enumerate() {
            let mut ids: Vec<u32> = terms(&mut analyzer, &f.text)
                .into_iter()
                .map(|t| {
                    let next = vocab.len() as u32;
                    let id = *vocab.entry(t).or_insert(next);
                    if id == next {
                        df.push(0);
                    }
                    df[id as usize] += 1;
                    id
                })
                .collect();
            ids.sort_unstable();
            let mut doc = TantivyDocument::default();
            doc.add_text(field, &f.text);
            doc.add_u64(ord, i as u64);
            writer.add_document(doc)?;
            facts.push(Fact {
                cartridge: f.cartridge,
                id: f.id,
                text: f.text,
                source: f.source,
                terms: ids.into_boxed_slice(),
            });
        }
        writer.commit()?;
        writer.wait_merging_threads()?;
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        let searcher = reader.searcher();
        let mut doc_to_fact = Vec::new();
        for seg in searcher.segment_readers() {
            let column = seg.fast_fields().u64("ord")?;
            doc_to_fact.push(
                (0..seg.max_doc())
                    .map(|d| column.first(d).unwrap_or(0) as u32)
                    .collect(),
            );
        }
        Ok(Self {
            cartridges,
            facts,
            vocab,
            df,
            field,
            doc_to_fact,
            searcher,
            analyzer,
            report,
            fingerprint,
        })
    }

    /// Facts in the index.
    pub fn len(&self) -> usize {
        self.facts.len()
    }

    /// Whether the index holds no fact.
    pub fn is_empty(&self) -> bool {
        self.facts.is_empty()
    }

    /// BM25 weight of a term in `df` of the facts (tantivy's formula).
    fn idf(&self, df: u32) -> f64 {
        let n = self.facts.len() as f64;
        let df = df as f64;
        (1.0 + (n - df + 0.5) / (df + 0.5)).ln()
    }

    /// The best fact for `text`, or `None` when no fact shares a term with
    /// it (or the text has no content word).
    ///
    /// Tantivy's BM25 finds the candidates (the top 32); the best one is the
    /// candidate with the highest *coverage*, BM25 breaking ties. The
    /// confidence is `coverage × exclusivity`, two things a raw BM25 score
    /// cannot tell, since it grows with the query's length and rarity:
    ///
    /// - **coverage**: the share of the query's IDF weight that the fact
    ///   contains. Each distinct query term weighs its BM25 IDF; a term no
    ///   fact contains weighs the most, `ln(1 + 2N + 1)`. "What is the
    ///   capital of Wakanda?" finds "The capital of X is Y" facts, but
    ///   "wakanda" is the heavy term and no fact has it: coverage ≈ 0.2.
    ///   An unrelated question shares a common word at most. A question
    ///   whose fact is loaded has all or nearly all of its terms in it.
    /// - **exclusivity**: how clearly that fact beats its rivals: its weight
    ///   in a softmax (temperature 0.05) over the candidates' coverage.
    ///   "Japan" alone is covered by five facts about Japan equally:
    ///   exclusivity 0.2. "capital of Japan" is covered fully by one fact
    ///   and to 0.75 by the other Japan facts: exclusivity ≈ 0.97. "capital
    ///   of Sudan" is covered fully by South Sudan's capital fact too: 0.5,
    ///   whichever BM25 puts first. Letting BM25's length and term-frequency
    ///   preferences into this softmax raised recall on the labelled set
    ///   but answered coincidental ties (a name that also appears in
    ///   another fact) with confidence 0.6-0.75 at 100,000 facts; a tie of
    ///   `m` facts is capped at `1/m` instead.
    ///
    /// The product reads "the fact addresses this share of the question,
    /// and is this likely the one meant". What it cannot see: a question
    /// about an attribute of a *mentioned* entity the facts do not hold
    /// ("population of Tokyo" finds "The capital of Japan is Tokyo", 0.77).
    /// `tests/suite/cartridge.rs` measures precision and recall per threshold.
    pub fn search(&self, text: &str) -> Result<Option<Hit>, CartridgeError> {
        if self.facts.is_empty() {
            return Ok(None);
        }
        let mut analyzer = self.analyzer.clone();
        let query_terms = terms(&mut analyzer, text);
        if query_terms.is_empty() {
            return Ok(None);
        }
        let mut weight_total = 0.0;
        // (term id, idf) of the query terms some fact contains.
        let mut known: Vec<(u32, f64)> = Vec::with_capacity(query_terms.len());
        let mut tantivy_terms = Vec::with_capacity(query_terms.len());
        for t in &query_terms {
            match self.vocab.get(t) {
                Some(&id) => {
                    let w = self.idf(self.df[id as usize]);
                    weight_total += w;
                    known.push((id, w));
                    tantivy_terms.push(Term::from_field_text(self.field, t));
                }
                None => weight_total += self.idf(0),
            }
        }
        if known.is_empty() {
            return Ok(None);
        }
        let query = BooleanQuery::new_multiterms_query(tantivy_terms);
        let top = self
            .searcher
            .search(&query, &TopDocs::with_limit(CANDIDATES).order_by_score())?;
        // (fact, coverage, BM25 score) of each candidate.
        let candidates: Vec<(&Fact, f64, f32)> = top
            .iter()
            .map(|&(score, addr)| {
                let fact = &self.facts
                    [self.doc_to_fact[addr.segment_ord as usize][addr.doc_id as usize] as usize];
                let covered: f64 = known
                    .iter()
                    .filter(|(id, _)| fact.terms.binary_search(id).is_ok())
                    .map(|(_, w)| w)
                    .sum();
                (fact, (covered / weight_total).clamp(0.0, 1.0), score)
            })
            .collect();
        let Some(&(best, coverage, best_score)) = candidates
            .iter()
            .max_by(|a, b| a.1.total_cmp(&b.1).then(a.2.total_cmp(&b.2)))
        else {
            return Ok(None);
        };
        // BM25 only chose between facts of equal coverage: a longer fact
        // or a term said once is no evidence that a fact is *not* the one
        // meant, so ties count as ties here.
        let mass: f64 = candidates
            .iter()
            .map(|&(_, c, _)| (-(coverage - c) / TEMPERATURE).exp())
            .sum();
        let exclusivity = 1.0 / mass;
        Ok(Some(Hit {
            cartridge: self.cartridges[best.cartridge as usize].clone(),
            fact_id: best.id.clone(),
            text: best.text.clone(),
            fact_source: best.source.clone(),
            confidence: (coverage * exclusivity).clamp(0.0, 1.0),
            coverage,
            exclusivity,
            score: best_score,
        }))
    }
}
