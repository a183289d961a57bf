// The decoder the LayerNorm families share (GPT-NeoX/Pythia, GPT-J, OPT, BLOOM, Falcon, StarCoder2): LayerNorm
// with bias, a fused q/k/v projection, rotary (full or partial), learned or ALiBi positions, sequential or parallel
// attention + MLP blocks, a two-layer MLP (GELU or ReLU), a bias on any linear, tied or untied heads.
// A family file parses its config into LnDecoderOptions, lists its weights under their Hugging Face names, and
// hands the model its host tensors in the layout below (LnDecoderHost), reordering fused rows where its checkpoint
// stores them differently; the forward pass is written once here.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "formats/checkpoint.h"
#include "formats/config_map.h"
#include "models/model.h"
#include "models/model_config.h"

namespace anvil {

enum class LnPositions {
  kRotary,   // rotary embedding of the first rotary_dim dims of each head
  kLearned,  // a learned position table added to the token embedding (OPT)
  kAlibi,    // a per-head linear bias on the attention scores (BLOOM)
};

enum class LnBlock {
  kSequential,  // x += attn(ln_1(x)); x += mlp(ln_2(x))
  kParallel,    // x += attn(ln_1(x)) + mlp(ln_2(x)) (ln_2 is ln_1 where the family has one norm per block)
};

enum class LnActivation { kGeluErf, kGeluTanh, kRelu };

struct LnDecoderOptions : FamilyConfig {
  LnPositions positions = LnPositions::kRotary;
  int64_t rotary_dim = 0;       // rotary: dims rotated per head (0: head_dim)
  int64_t position_offset = 0;  // learned: row of the table position 0 reads (OPT: 2)
  LnBlock block = LnBlock::kSequential;
  bool shares_block_norm = false;  // parallel: attention and MLP read the same norm (GPT-J, Falcon-7B)
  bool has_embed_norm = false;     // a LayerNorm over the token embeddings (BLOOM)
  bool has_final_norm = true;
  LnActivation activation = LnActivation::kGeluErf;
};

// One layer's host weights. Biases may be undefined (no bias).
struct LnLayerHost {
  Tensor attn_norm_weight, attn_norm_bias;  // [hidden_size]
  Tensor mlp_norm_weight, mlp_norm_bias;    // [hidden_size]; undefined with shares_block_norm
  Tensor qkv_weight;                        // [(num_heads + 2 num_kv_heads) * head_dim, hidden_size]: q, k, v rows
  Tensor qkv_bias;                          // [(num_heads + 2 num_kv_heads) * head_dim]
  Tensor o_weight, o_bias;                  // [hidden_size, num_heads * head_dim], [hidden_size]
  Tensor fc1_weight, fc1_bias;              // [intermediate_size, hidden_size], [intermediate_size]
  Tensor fc2_weight, fc2_bias;              // [hidden_size, intermediate_size], [hidden_size]
};

struct LnDecoderHost {
  Tensor embed;                               // [vocab_size, hidden_size]
  Tensor position_embed;                      // learned: [max_position_embeddings + position_offset, hidden_size]
  Tensor embed_norm_weight, embed_norm_bias;  // [hidden_size] (has_embed_norm)
  std::vector<LnLayerHost> layers;
  Tensor final_norm_weight, final_norm_bias;  // [hidden_size] (has_final_norm)
  Tensor lm_head;                             // [vocab_size, hidden_size]; undefined: tied to embed
  Tensor lm_head_bias;                        // [vocab_size] or undefined
  std::vector<Buffer> storage;                // host copies the family made (stacked or reordered weights)
};

// The options of a config made by an LnDecoder family (the defaults where it carries none).
const LnDecoderOptions& ln_decoder_options(const ModelConfig& config);

// Builds the model and uploads `host` through `backend`.
Expected<std::unique_ptr<Model>> create_ln_decoder(const ModelConfig& config, LnDecoderHost host, Backend& backend);

// ---- helpers for the family files ----

// The host tensors `parts` (one float dtype, equal trailing shape) stacked along dim 0 into a buffer appended to
// `storage`; a single part is returned as it is.
Expected<Tensor> stack_rows(std::span<const Tensor> parts, std::vector<Buffer>* storage);

// Row blocks of `block_rows` rows of host tensor w [rows, ...] (or a bias [rows]) reordered: block b of the
// result is block order[b] of w. The copy lives in a buffer appended to `storage`.
Expected<Tensor> reorder_row_blocks(const Tensor& w, int64_t block_rows, std::span<const int64_t> order,
                                    std::vector<Buffer>* storage);

// The block order that turns a per-head fused projection [num_heads][3][head_dim] (GPT-NeoX, BLOOM, Falcon
// without new_decoder_architecture) into [3][num_heads][head_dim] (q rows, k rows, v rows).
std::vector<int64_t> per_head_qkv_order(int64_t num_heads);

// The MLP activation a config names (`key` = `value`): gelu (erf); gelu_new, gelu_pytorch_tanh, gelu_fast
// (tanh); relu. Anything else is an error naming the field and the value.
Status parse_ln_activation(const ConfigMap& config, const std::string& key, const std::string& value,
                           LnActivation* out);

// The fraction of each head that rotates (`partial_rotary_factor` in rope_parameters or at the top level, or the
// family's own `legacy_key`, e.g. GPT-NeoX's rotary_pct; `default_factor` when none is set) as a dim count; an error
// unless it is an even count in (0, head_dim].
Status parse_rotary_dim(const ConfigMap& config, const std::string& legacy_key, float default_factor, int64_t head_dim,
                        int64_t* rotary_dim);

// ---- GGUF (llama.cpp's names) ----

// The keys every LayerNorm family's GGUF has, `<arch>.*` with arch = general.architecture: embedding_length,
// block_count, attention.head_count (and head_count_kv), context_length, attention.layer_norm_epsilon,
// rope.freq_base; intermediate_size from `ffn_up_tensor`'s rows (the Falcon converter writes 4 * hidden as
// feed_forward_length whatever the model has); vocab_size from token_embd.weight; tie_word_embeddings when the file
// has no output.weight; dtype float32 (the weights keep their own). `*arch` gets general.architecture.
Status parse_ln_gguf(const CheckpointData& data, const std::string& ffn_up_tensor, ModelConfig* c, std::string* arch);

// Renames every tensor of a GGUF file to `name_of(name)` (its Hugging Face name); a tensor it maps to "" is an
// error naming the tensor and the family.
Status adopt_gguf_names(const ModelConfig& config, WeightStore* weights,
                        const std::function<std::string(const std::string&)>& name_of);

// "blk.<n>.<rest>" with n < num_layers: the layer and the rest; false otherwise.
bool split_gguf_layer(const std::string& name, int64_t num_layers, int64_t* layer, std::string* rest);

// ALiBi slopes [num_heads] as Hugging Face's BLOOM computes them (geometric in the closest power of two, the
// remaining heads interleaved from the next one).
std::vector<float> alibi_slopes(int64_t num_heads);

}  // namespace anvil
