/* inode_table.c — see inode_table.h. */
#include "inode_table.h"

#include "namespace.h"

#include <stdlib.h>

#define FIRST_CAPACITY 1024

static size_t home_of(uint64_t ino, size_t capacity)
{
    uint64_t h = ino * 0x9E3779B97F4A7C15ULL;
    return (size_t)(h ^ (h >> 32)) & (capacity - 1);
}

fs_node *inode_table_find(const inode_table *table, uint64_t ino)
{
    if (!table->capacity)
        return NULL;
    for (size_t i = home_of(ino, table->capacity);; i = (i + 1) & (table->capacity - 1)) {
        fs_node *node = table->slots[i];
        if (!node || node->ino == ino)
            return node;
    }
}

static void place(fs_node **slots, size_t capacity, fs_node *node)
{
    size_t i = home_of(node->ino, capacity);
    while (slots[i])
        i = (i + 1) & (capacity - 1);
    slots[i] = node;
}

bool inode_table_insert(inode_table *table, fs_node *node)
{
    if ((table->count + 1) * 2 > table->capacity) {
        size_t capacity = table->capacity ? table->capacity * 2 : FIRST_CAPACITY;
        fs_node **slots = calloc(capacity, sizeof *slots);
        if (!slots)
            return false;
        for (size_t i = 0; i < table->capacity; i++)
            if (table->slots[i])
                place(slots, capacity, table->slots[i]);
        free(table->slots);
        table->slots = slots;
        table->capacity = capacity;
    }
    place(table->slots, table->capacity, node);
    table->count++;
    return true;
}

void inode_table_remove(inode_table *table, uint64_t ino)
{
    size_t mask = table->capacity - 1, hole = home_of(ino, table->capacity);
    while (table->slots[hole]->ino != ino)
        hole = (hole + 1) & mask;
    table->slots[hole] = NULL;
    table->count--;
    for (size_t i = (hole + 1) & mask; table->slots[i]; i = (i + 1) & mask) {
        /* An entry whose home lies after the hole, up to where it sits, is found as it is. */
        size_t home = home_of(table->slots[i]->ino, table->capacity);
        if (((home - hole - 1) & mask) >= ((i - hole) & mask)) {
            table->slots[hole] = table->slots[i];
            table->slots[i] = NULL;
            hole = i;
        }
    }
}

void inode_table_clear(inode_table *table)
{
    free(table->slots);
    *table = (inode_table){0};
}
