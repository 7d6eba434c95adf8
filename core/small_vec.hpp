// SPDX-License-Identifier: Apache-2.0
// A vector that holds its first element inline. Almost every device has one
// physical range and almost every tag one device; a std::vector puts that
// one element in a heap block of its own (32 bytes with malloc's header, on
// top of the vector's 24), and at 100,000 tags those blocks add up. Two or
// more elements live in an ordinary std::vector on the heap.
//
// Elements are contiguous either way, so iterators are plain pointers.
#pragma once

#include <algorithm>
#include <cstddef>
#include <initializer_list>
#include <memory>
#include <optional>
#include <utility>
#include <vector>

namespace tagmem {

template <class T> class SmallVec {
  public:
    using value_type = T;
    using iterator = T*;
    using const_iterator = const T*;
    using size_type = std::size_t;

    SmallVec() = default;
    SmallVec(std::initializer_list<T> items) { assign(std::vector<T>(items)); }
    SmallVec(std::vector<T> items) { assign(std::move(items)); } // NOLINT: drop-in for vector
    SmallVec(const SmallVec& o) { assign(o.to_vector()); }
    SmallVec(SmallVec&& o) noexcept : one_(std::move(o.one_)), more_(std::move(o.more_)) {
        o.one_.reset();
    }
    SmallVec& operator=(const SmallVec& o) {
        if (this != &o)
            assign(o.to_vector());
        return *this;
    }
    SmallVec& operator=(SmallVec&& o) noexcept {
        one_ = std::move(o.one_);
        more_ = std::move(o.more_);
        o.one_.reset();
        return *this;
    }

    T* data() { return more_ ? more_->data() : (one_ ? &*one_ : nullptr); }
    const T* data() const { return more_ ? more_->data() : (one_ ? &*one_ : nullptr); }
    size_type size() const { return more_ ? more_->size() : (one_ ? 1 : 0); }
    bool empty() const { return size() == 0; }
    T* begin() { return data(); }
    T* end() { return data() + size(); }
    const T* begin() const { return data(); }
    const T* end() const { return data() + size(); }
    T& operator[](size_type i) { return data()[i]; }
    const T& operator[](size_type i) const { return data()[i]; }
    T& front() { return *data(); }
    const T& front() const { return *data(); }
    T& back() { return data()[size() - 1]; }
    const T& back() const { return data()[size() - 1]; }

    void clear() {
        one_.reset();
        more_.reset();
    }
    void push_back(T value) { insert(end(), std::move(value)); }
    template <class... A> T& emplace_back(A&&... args) {
        push_back(T(std::forward<A>(args)...));
        return back();
    }
    T* insert(const T* pos, T value) {
        auto at = static_cast<size_type>(pos - begin());
        if (empty()) {
            one_.emplace(std::move(value));
            return begin();
        }
        auto items = take();
        items.insert(items.begin() + static_cast<std::ptrdiff_t>(at), std::move(value));
        assign(std::move(items));
        return begin() + at;
    }
    T* erase(const T* pos) {
        auto at = static_cast<size_type>(pos - begin());
        auto items = take();
        items.erase(items.begin() + static_cast<std::ptrdiff_t>(at));
        assign(std::move(items));
        return begin() + at;
    }
    // Removes every element equal to value; returns how many.
    size_type erase_value(const T& value) {
        auto items = take();
        auto n = std::erase(items, value);
        assign(std::move(items));
        return n;
    }

    std::vector<T> to_vector() const { return std::vector<T>(begin(), end()); }

    bool operator==(const SmallVec& o) const {
        return std::equal(begin(), end(), o.begin(), o.end());
    }
    friend bool operator==(const SmallVec& a, const std::vector<T>& b) {
        return std::equal(a.begin(), a.end(), b.begin(), b.end());
    }

  private:
    std::vector<T> take() {
        std::vector<T> items;
        if (more_)
            items = std::move(*more_);
        else if (one_)
            items.push_back(std::move(*one_));
        clear();
        return items;
    }
    void assign(std::vector<T> items) {
        clear();
        if (items.size() == 1) {
            one_.emplace(std::move(items.front()));
        } else if (items.size() > 1) {
            items.shrink_to_fit();
            more_ = std::make_unique<std::vector<T>>(std::move(items));
        }
    }

    std::optional<T> one_;                 // the only element, when there is one
    std::unique_ptr<std::vector<T>> more_; // all elements, when there are two or more
};

} // namespace tagmem
