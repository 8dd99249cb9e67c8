//! The KV-cached, prefix-shared scorer gives the log-likelihoods of plain full-sequence
//! forwards over exactly the inputs lm-evaluation-harness builds (context once per
//! question, left truncation to the model length, rolling windows), for any thread count.

use glass_data::config::TokenizerConfig;
use glass_data::tokenizer::train_bpe;
use glass_data::GlassTokenizer;
use glass_engine::{KvCache, Model, ModelConfig};
use glass_eval::score::rolling_windows;
use glass_eval::Scorer;

fn setup(max_len: usize) -> (Model, GlassTokenizer) {
    let tcfg: TokenizerConfig =
        serde_json::from_value(serde_json::json!({"vocab_size": 320})).unwrap();
    let text = glass_data::embedded_work("shakespeare/macbeth.txt").unwrap()[..20000].to_string();
    let json = train_bpe(&tcfg, std::iter::once(text)).unwrap();
    let tok = GlassTokenizer::from_json(&json, &tcfg).unwrap();
    let cfg = ModelConfig {
        vocab_size: tok.vocab_size(),
        d_model: 32,
        n_layers: 2,
        n_heads: 2,
        n_kv_heads: 1,
        ffn_hidden: 48,
        max_seq_len: max_len,
        // Untied: with these seeds the greedy continuations hit the stop sequences.
        tie_embeddings: false,
        ..ModelConfig::preset("tiny").unwrap()
    };
    (Model::new(&cfg, 7).unwrap(), tok)
}

/// Σ log softmax of `cont` after `inp` (the harness's input, already truncated), from
/// one uncached full forward.
fn reference(model: &Model, inp: &[u32], cont: &[u32]) -> f64 {
    let mut m = model.clone_for_test();
    let v = m.cfg.vocab_size;
    let logits = m.forward_logits(inp, 1, inp.len()).unwrap();
    let start = inp.len() - cont.len();
    cont.iter()
        .enumerate()
        .map(|(i, &t)| {
            let row = &logits[(start + i) * v..(start + i + 1) * v];
            let mx = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
            let s: f64 = row.iter().map(|&x| (x as f64 - mx).exp()).sum();
            row[t as usize] as f64 - mx - s.ln()
        })
        .sum()
}

trait CloneForTest {
    fn clone_for_test(&self) -> Model;
}
impl CloneForTest for Model {
    fn clone_for_test(&self) -> Model {
        let mut m = Model::zeros(&self.cfg).unwrap();
        m.params.copy_from_slice(&self.params);
        m
    }
}

/// A scorer over `model` with the harness's prefix token and context length.
fn scorer<'a>(
    model: &'a Model,
    tok: &'a GlassTokenizer,
    prefix_token: u32,
    max_length: usize,
) -> Scorer<'a> {
    Scorer {
        model,
        packed: None,
        tokenizer: tok,
        prefix_token,
        max_length,
    }
}

/// The first `n` documents of a bundled task, prepared with the harness's default seed.
fn bundled_docs(name: &str, n: usize) -> Vec<glass_eval::Prepared> {
    let task = glass_eval::bundled::bundled(name).unwrap().unwrap();
    let data = task.load().unwrap();
    glass_eval::prepare(&task, &data, Some(n), 1234).unwrap()
}

fn harness_input(ctx: &[u32], cont: &[u32], l: usize) -> Vec<u32> {
    let full: Vec<u32> = ctx.iter().chain(cont).copied().collect();
    let s = full.len().saturating_sub(l + 1);
    full[s..full.len() - 1].to_vec()
}

#[test]
fn shared_context_scores_equal_full_forwards_including_truncation() {
    let (model, tok) = setup(24);
    let eos = tok.specials().eos;
    let scorer = scorer(&model, &tok, eos, 24);
    let mut cache = KvCache::new(&model);
    for (ctx, conts) in [
        (
            "Where hast thou been, sister? ",
            vec!["Killing swine.", "In thunder", "Sister, where thou?"],
        ),
        // Long enough that context + continuation exceed the model length (left truncation).
        (
            "A sailor's wife had chestnuts in her lap, and mounch'd, and mounch'd, and mounch'd",
            vec![" Give me, quoth I", " Aroint thee, witch!"],
        ),
        ("", vec!["When shall we three meet again"]),
    ] {
        let conts: Vec<String> = conts.into_iter().map(String::from).collect();
        let got = scorer.multiple_choice(ctx, &conts, &mut cache).unwrap();
        for (c, g) in conts.iter().zip(&got) {
            let (ce, ue) = scorer.encode_pair(ctx, c).unwrap();
            let want = reference(&model, &harness_input(&ce, &ue, 24), &ue);
            assert!((g - want).abs() < 1e-4, "{ctx:?} + {c:?}: {g} vs {want}");
        }
    }
    // Trailing whitespace of the context moves to the continuation.
    let (ce, ue) = scorer.encode_pair("Question: x\nAnswer: ", "yes").unwrap();
    assert_eq!(ce, tok.encode("Question: x\nAnswer:").unwrap());
    assert_eq!(
        ue,
        tok.encode("Question: x\nAnswer: yes").unwrap()[ce.len()..]
    );
}

#[test]
fn rolling_loglikelihood_sums_the_harness_windows() {
    let (model, tok) = setup(24);
    let eos = tok.specials().eos;
    let scorer = scorer(&model, &tok, eos, 24);
    let text = "So foul and fair a day I have not seen. How far is't call'd to Forres? What are these, so wither'd and so wild in their attire";
    let toks = tok.encode(text).unwrap();
    assert!(toks.len() > 2 * 24, "spans several windows");
    let want: f64 = rolling_windows(&toks, eos, 24)
        .iter()
        .map(|(c, p)| reference(&model, &harness_input(c, p, 24), p))
        .sum();
    let (got, n) = scorer.rolling(text, &mut KvCache::new(&model)).unwrap();
    assert_eq!(n, toks.len());
    assert!((got - want).abs() < 1e-4, "{got} vs {want}");
}

#[test]
fn scores_are_identical_for_any_thread_count() {
    let (model, tok) = setup(96);
    let scorer = scorer(&model, &tok, tok.specials().eos, 96);
    let docs = bundled_docs("glass_cloze", 12);
    let run = |threads| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(|| scorer.score_all(&docs, &|_| {}).unwrap())
    };
    assert_eq!(run(1), run(3));
}

#[test]
fn batched_groups_score_like_single_questions() {
    let (model, tok) = setup(64);
    let scorer = scorer(&model, &tok, tok.specials().eos, 64);
    // More than one group, the last partial; some questions need truncation at 64 tokens.
    let n = glass_eval::score::BATCH_DOCS + 5;
    let docs = bundled_docs("glass_cloze", n);
    let batched = scorer.score_all(&docs, &|_| {}).unwrap();
    let mut cache = KvCache::new(&model);
    for (d, b) in docs.iter().zip(&batched) {
        let glass_eval::Prepared::MultipleChoice {
            context,
            continuations,
            ..
        } = d
        else {
            unreachable!()
        };
        let single = scorer
            .multiple_choice(context, continuations, &mut cache)
            .unwrap();
        let glass_eval::Scored::MultipleChoice { loglikelihoods } = b else {
            unreachable!()
        };
        for (a, s) in loglikelihoods.iter().zip(&single) {
            assert!((a - s).abs() < 1e-4, "{a} vs {s}");
        }
    }
}

/// Questions after the same few-shot examples (MMLU's fixed shots, TruthfulQA's primer):
/// the group computes the shared beginning once, and every score keeps the bits of the
/// question scored alone. Also a group whose contexts share too little to be worth it.
#[test]
fn a_shared_few_shot_beginning_keeps_every_score_bit_for_bit() {
    let (model, tok) = setup(96);
    let scorer = scorer(&model, &tok, tok.specials().eos, 96);
    let shots = "Question: Who comes? Answer: Macduff.\nQuestion: What hour? Answer: Midnight.\n";
    let questions = [
        "Question: Where is the king? Answer:",
        "Question: Who knocks? Answer:",
        "Question: What is done? Answer:",
        "Question: Is this a dagger? Answer:",
    ];
    let choices: Vec<String> = [" Macbeth", " The porter", " Banquo"]
        .iter()
        .map(|c| c.to_string())
        .collect();
    for prefix in [shots, ""] {
        let docs: Vec<glass_eval::Prepared> = questions
            .iter()
            .map(|q| glass_eval::Prepared::MultipleChoice {
                context: format!("{prefix}{q}"),
                choices: choices.clone(),
                continuations: choices.clone(),
                gold: Some(0),
                mc2_labels: None,
            })
            .collect();
        let contexts: Vec<Vec<u32>> = questions
            .iter()
            .map(|q| tok.encode(&format!("{prefix}{q}")).unwrap())
            .collect();
        let shared = glass_eval::score::shared_prefix_len(contexts.iter().map(|c| c.as_slice()));
        if prefix.is_empty() {
            assert_eq!(shared, 0, "no shared beginning here");
        } else {
            assert!(
                shared >= glass_eval::score::SHARED_PREFIX_MIN,
                "the shots are shared ({shared} tokens)"
            );
        }
        let batched = scorer.score_all(&docs, &|_| {}).unwrap();
        let mut cache = KvCache::new(&model);
        for (q, b) in questions.iter().zip(&batched) {
            let alone = scorer
                .multiple_choice(&format!("{prefix}{q}"), &choices, &mut cache)
                .unwrap();
            assert_eq!(
                b,
                &glass_eval::Scored::MultipleChoice {
                    loglikelihoods: alone
                },
                "{q}"
            );
        }
    }
}

#[test]
fn batched_rolling_windows_sum_like_single_texts() {
    let (model, tok) = setup(24);
    let scorer = scorer(&model, &tok, tok.specials().eos, 24);
    let docs = bundled_docs("glass_heldout", 3);
    let batched = scorer.score_all(&docs, &|_| {}).unwrap();
    let mut cache = KvCache::new(&model);
    for (d, b) in docs.iter().zip(&batched) {
        let glass_eval::Prepared::Rolling { text } = d else {
            unreachable!()
        };
        let (want, n) = scorer.rolling(text, &mut cache).unwrap();
        let glass_eval::Scored::Rolling {
            loglikelihood,
            tokens,
        } = b
        else {
            unreachable!()
        };
        assert_eq!(*tokens, n);
        assert!(
            (loglikelihood - want).abs() < 1e-3 * (1.0 + want.abs() / 1e3),
            "{loglikelihood} vs {want}"
        );
    }
}

/// Greedy continuation from uncached full forwards, to `max_new` tokens or the
/// end-of-sequence token, decoded without special tokens and cut at the stops: what the
/// harness's answer is, whatever step its stopping criteria fire at.
fn reference_generation(
    model: &Model,
    tok: &GlassTokenizer,
    ctx: &[u32],
    max_new: usize,
    stops: &[String],
) -> String {
    let mut m = model.clone_for_test();
    let v = m.cfg.vocab_size;
    let eos = tok.specials().eos;
    let mut seq = ctx.to_vec();
    let mut out = Vec::new();
    for _ in 0..max_new {
        let logits = m.forward_logits(&seq, 1, seq.len()).unwrap();
        let t = glass_engine::argmax_token(&logits[(seq.len() - 1) * v..]);
        if t == eos {
            break;
        }
        out.push(t);
        seq.push(t);
    }
    let text = tok.hf().decode(&out, true).unwrap();
    glass_eval::generate::cut_at_stops(&text, stops)
}

fn generation_docs(n: usize, max_gen_toks: usize) -> Vec<glass_eval::Prepared> {
    bundled_docs("glass_cloze", n)
        .into_iter()
        .enumerate()
        .map(|(i, p)| {
            let glass_eval::Prepared::MultipleChoice { context, .. } = p else {
                unreachable!()
            };
            glass_eval::Prepared::Generate {
                // Contexts of different lengths, some longer than the model allows.
                context: context.repeat(1 + i % 3),
                until: vec!["\n".into(), ["e ", "the"][i % 2].into()],
                max_gen_toks: max_gen_toks + i % 5,
                reference: String::new(),
                prediction_prefix: String::new(),
            }
        })
        .collect()
}

#[test]
fn batched_greedy_generation_equals_full_forwards_cut_at_the_stops() {
    let (model, tok) = setup(96);
    let s = scorer(&model, &tok, tok.specials().eos, 96);
    let docs = generation_docs(21, 10);
    let got = s.generate_all(&docs, &|_| {}).unwrap();
    assert_eq!(got.len(), docs.len());
    let mut stopped_early = 0;
    for (d, g) in docs.iter().zip(&got) {
        let glass_eval::Prepared::Generate {
            context,
            until,
            max_gen_toks,
            ..
        } = d
        else {
            unreachable!()
        };
        let ctx = s.generation_context(context, *max_gen_toks).unwrap();
        assert!(ctx.len() <= 96 - max_gen_toks);
        assert_eq!(g.context_tokens, ctx.len());
        let stops = s.stop_sequences(until).unwrap();
        let want = reference_generation(&model, &tok, &ctx, *max_gen_toks, &stops);
        assert_eq!(g.completion, want);
        stopped_early += usize::from(g.tokens < *max_gen_toks);
    }
    // The stop sequences fired for some documents, so early stopping was exercised.
    assert!(stopped_early > 0);
}

#[test]
fn generation_is_identical_for_any_thread_count() {
    let (model, tok) = setup(96);
    let s = scorer(&model, &tok, tok.specials().eos, 96);
    let docs = generation_docs(40, 8);
    let run = |threads| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(|| s.generate_all(&docs, &|_| {}).unwrap())
    };
    assert_eq!(run(1), run(3));
}

#[test]
fn generation_refuses_max_gen_toks_beyond_the_model_length() {
    let (model, tok) = setup(32);
    let s = scorer(&model, &tok, tok.specials().eos, 32);
    let docs = generation_docs(1, 40);
    let e = s.generate_all(&docs, &|_| {}).unwrap_err().to_string();
    assert!(e.contains("max_gen_toks 40"), "{e}");
}

#[test]
fn packed_scoring_gives_the_same_bits() {
    let (model, tok) = setup(64);
    let docs = bundled_docs("glass_cloze", 20);
    let plain = scorer(&model, &tok, tok.specials().eos, 64)
        .score_all(&docs, &|_| {})
        .unwrap();
    let packed = model.packed();
    let s = Scorer {
        packed: Some(&packed),
        ..scorer(&model, &tok, tok.specials().eos, 64)
    };
    assert_eq!(s.score_all(&docs, &|_| {}).unwrap(), plain);
}
