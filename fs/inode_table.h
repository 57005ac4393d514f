/* inode_table.h — the namespace's nodes by inode number: open addressing with linear probing,
 * kept at most half full, removal by moving back the entries that follow (no tombstones), so
 * lookups stay short however many nodes come and go. Not thread-safe (the namespace's lock). */
#ifndef HUBFS_INODE_TABLE_H
#define HUBFS_INODE_TABLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct fs_node;

typedef struct inode_table {
    struct fs_node **slots;      /* a power-of-two number of them, or none */
    size_t capacity, count;
} inode_table;

/* The node with that inode number, or NULL. */
struct fs_node *inode_table_find(const inode_table *table, uint64_t ino);

/* Adds a node whose inode number is not in the table; false when out of memory. */
bool inode_table_insert(inode_table *table, struct fs_node *node);

/* Removes the node with that inode number (which must be there). */
void inode_table_remove(inode_table *table, uint64_t ino);

/* Frees the table's slots (not the nodes). */
void inode_table_clear(inode_table *table);

#endif
