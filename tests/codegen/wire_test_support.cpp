#include "wire_test_support.h"

#include <flatbuffers/util.h>

#include <cstdio>
#include <cstdlib>

namespace bypass::wire::test {

Handlers TestHost::test_handlers_() { return test_handlers(); }

const void* Fill::chain(const LinkFn* fns, size_t n, int depth) {
  if (n == 0 || depth >= 2) return nullptr;
  size_t k = static_cast<size_t>(rng.below(3));
  if (k > n) k = n;
  // Distinct structs: a partial Fisher-Yates shuffle of the candidates' indices.
  std::vector<size_t> idx(n);
  for (size_t i = 0; i < n; ++i) idx[i] = i;
  VkBaseOutStructure* head = nullptr;
  VkBaseOutStructure** tail = &head;
  for (size_t i = 0; i < k; ++i) {
    const size_t j = i + static_cast<size_t>(rng.below(n - i));
    std::swap(idx[i], idx[j]);
    VkBaseOutStructure* link = fns[idx[i]](*this, depth);
    *tail = link;
    tail = &link->pNext;
  }
  return head;
}

bool equal_chain(const void* a, const void* b, Diff& d, unsigned flags) {
  auto* pa = static_cast<const VkBaseOutStructure*>(a);
  auto* pb = static_cast<const VkBaseOutStructure*>(b);
  for (size_t i = 0; pa && pb; pa = pa->pNext, pb = pb->pNext, ++i) {
    if (pa->sType != pb->sType) return d.at("link " + std::to_string(i) + " sType");
    if (!equal_link(pa, pb, d, flags)) return d.at("link " + std::to_string(i));
  }
  if (pa || pb) return d.at("chain length");
  return true;
}

bool same_stypes(const void* a, const void* b) {
  auto* pa = static_cast<const VkBaseOutStructure*>(a);
  auto* pb = static_cast<const VkBaseOutStructure*>(b);
  for (; pa && pb; pa = pa->pNext, pb = pb->pNext)
    if (pa->sType != pb->sType) return false;
  return !pa && !pb;
}

void* clone_chain(Fill& f, const void* chain) {
  VkBaseOutStructure* head = nullptr;
  VkBaseOutStructure** tail = &head;
  for (auto* p = static_cast<const VkBaseOutStructure*>(chain); p; p = p->pNext) {
    const size_t known = struct_size(p->sType);
    const size_t size = known > sizeof(VkBaseOutStructure) ? known : sizeof(VkBaseOutStructure);
    auto* link = reinterpret_cast<VkBaseOutStructure*>(f.pool.make<uint64_t>((size + 7) / 8));
    link->sType = p->sType;
    *tail = link;
    tail = &link->pNext;
  }
  return head;
}

// ---------------------------------------------------------------- schema
const Schema& Schema::get() {
  static const Schema* s = [] {
    auto* out = new Schema;
    if (!flatbuffers::LoadFile(BYPASS_SCHEMA_BFBS, true, &out->bytes_)) {
      std::fprintf(stderr, "cannot read the compiled schema %s\n", BYPASS_SCHEMA_BFBS);
      std::abort();
    }
    flatbuffers::Verifier v(reinterpret_cast<const uint8_t*>(out->bytes_.data()), out->bytes_.size());
    if (!reflection::VerifySchemaBuffer(v)) {
      std::fprintf(stderr, "%s is not a binary schema\n", BYPASS_SCHEMA_BFBS);
      std::abort();
    }
    out->schema = reflection::GetSchema(out->bytes_.data());
    return out;
  }();
  return *s;
}

const reflection::Object* Schema::object(const std::string& name) const {
  return schema->objects()->LookupByKey(name.c_str());
}

bool Schema::verify(const std::string& table, const uint8_t* buf, size_t size, std::string* why) const {
  const reflection::Object* obj = object(table);
  if (!obj) {
    *why = "no table " + table + " in the schema";
    return false;
  }
  if (!flatbuffers::Verify(*schema, *obj, buf, size)) {
    *why = table + ": reflection verifier rejects the buffer";
    return false;
  }
  return walk(*obj, *flatbuffers::GetAnyRoot(buf), why, 0);
}

// Finds every ChainLink and verifies its nested buffer as the table its sType names.
bool Schema::walk(const reflection::Object& obj, const flatbuffers::Table& t, std::string* why, int depth) const {
  if (depth > 64) {
    *why = "nesting too deep";
    return false;
  }
  const std::string name = obj.name()->str();
  if (name == "bypass.wire.ChainLink") {
    const auto* fstype = obj.fields()->LookupByKey("stype");
    const auto* fbody = obj.fields()->LookupByKey("body");
    const int32_t stype = flatbuffers::GetFieldI<int32_t>(t, *fstype);
    const auto* body = flatbuffers::GetFieldV<uint8_t>(t, *fbody);
    const char* table = table_of_stype(stype);
    if (!table) {
      *why = "chain link with unknown sType " + std::to_string(stype);
      return false;
    }
    if (!body) {
      *why = "chain link without a body";
      return false;
    }
    return verify(table, body->data(), body->size(), why);
  }
  for (const reflection::Field* f : *obj.fields()) {
    const reflection::BaseType bt = f->type()->base_type();
    if (bt == reflection::Obj) {
      const reflection::Object* sub = schema->objects()->Get(f->type()->index());
      if (sub->is_struct()) continue;
      if (const flatbuffers::Table* child = flatbuffers::GetFieldT(t, *f))
        if (!walk(*sub, *child, why, depth + 1)) return false;
    } else if (bt == reflection::Vector && f->type()->element() == reflection::Obj) {
      const reflection::Object* sub = schema->objects()->Get(f->type()->index());
      if (sub->is_struct()) continue;
      if (const auto* vec = flatbuffers::GetFieldV<flatbuffers::Offset<flatbuffers::Table>>(t, *f))
        for (flatbuffers::uoffset_t i = 0; i < vec->size(); ++i)
          if (!walk(*sub, *vec->Get(i), why, depth + 1)) return false;
    }
  }
  return true;
}

}  // namespace bypass::wire::test
